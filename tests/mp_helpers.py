"""Process targets and objects for the tests: importable by spawn and forkserver children.

Kept free of pytest imports so that children start fast.
"""

from __future__ import annotations

import copyreg
import functools
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import multiprocessing.reduction
import multiprocessing.synchronize
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict

METHODS = ("fork", "spawn", "forkserver")
NATIVE_CHECK = sys.version_info >= (3, 11, 5)  # CPython refuses foreign SemLocks itself


def creation_constructors() -> list[tuple[Any, str]]:
    """(owner, name) of every constructor the sanitizer hooks to record origins."""
    from multiprocessing import queues, sharedctypes, synchronize

    return [
        (synchronize.SemLock, "__init__"),
        (synchronize.Condition, "__init__"),
        (synchronize.Event, "__init__"),
        (synchronize.Barrier, "__init__"),
        (queues.Queue, "__init__"),
        (queues.JoinableQueue, "__init__"),
        (queues.SimpleQueue, "__init__"),
        (sharedctypes, "Value"),
        (sharedctypes, "Array"),
    ]


MAKERS: Dict[str, Callable[[Any], Any]] = {
    "Lock": lambda ctx: ctx.Lock(),
    "RLock": lambda ctx: ctx.RLock(),
    "Semaphore": lambda ctx: ctx.Semaphore(2),
    "BoundedSemaphore": lambda ctx: ctx.BoundedSemaphore(2),
    "Condition": lambda ctx: ctx.Condition(),
    "Event": lambda ctx: ctx.Event(),
    "Barrier": lambda ctx: ctx.Barrier(1),
    "Queue": lambda ctx: ctx.Queue(),
    "JoinableQueue": lambda ctx: ctx.JoinableQueue(),
    "SimpleQueue": lambda ctx: ctx.SimpleQueue(),
    "Value": lambda ctx: ctx.Value("i", 0),
    "Array": lambda ctx: ctx.Array("i", 3),
}


def touch(obj: Any) -> None:
    """Use the object the way a child would: this is what crashes natively."""
    if hasattr(obj, "acquire") and not hasattr(obj, "notify"):
        obj.acquire()
        obj.release()
    elif hasattr(obj, "notify"):
        with obj:
            obj.notify_all()
    elif hasattr(obj, "is_set"):
        obj.set()
    elif hasattr(obj, "n_waiting"):
        obj.wait(timeout=5)
    elif hasattr(obj, "task_done"):
        obj.put(1)
        obj.get(timeout=5)
        obj.task_done()
    elif hasattr(obj, "get_lock"):
        with obj.get_lock():
            pass
    elif hasattr(obj, "put"):
        obj.put(1)
        obj.get(**({"timeout": 5} if hasattr(obj, "qsize") else {}))
    else:
        raise TypeError(f"do not know how to touch {obj!r}")


def touch_kwargs(config: Dict[str, Any]) -> None:
    touch(config["items"][0].obj)


def call(func: Callable[[], None]) -> None:
    func()


@dataclass
class Holder:
    obj: Any


@dataclass
class Config:
    lock: Any


def touch_config(config: Config) -> None:
    touch(config.lock)


def exit_code(proc: Any, timeout: float = 60) -> int:
    """Start ``proc`` and wait for it, killing it after ``timeout`` seconds: its exit code."""
    proc.start()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode


def touch_init(_unused: Any, obj: Any) -> None:
    touch(obj)


def ping() -> str:
    return "pong"


def _holder_class(base: type) -> type:
    class HoldingProcess(base):  # type: ignore[misc, valid-type]
        """A Process subclass carrying the object as an attribute."""

        def __init__(self, obj: Any) -> None:
            super().__init__()
            self._record = obj

        def run(self) -> None:
            touch(self._record)

    return HoldingProcess


ForkHolder = _holder_class(multiprocessing.context.ForkProcess)
ForkHolder.__qualname__ = ForkHolder.__name__ = "ForkHolder"
SpawnHolder = _holder_class(multiprocessing.context.SpawnProcess)
SpawnHolder.__qualname__ = SpawnHolder.__name__ = "SpawnHolder"
ForkServerHolder = _holder_class(multiprocessing.context.ForkServerProcess)
ForkServerHolder.__qualname__ = ForkServerHolder.__name__ = "ForkServerHolder"
HOLDERS = {"fork": ForkHolder, "spawn": SpawnHolder, "forkserver": ForkServerHolder}

# Each channel: how the object reaches the child, and the path a report names.
CHANNEL_PATHS = {
    "args": "args[0]",
    "kwargs": "kwargs['config']['items'][0].obj",
    "partial": "args[0].args[0]",
    "dataclass": "args[0].lock",
    "subclass": "self._record",
    "pool": "initargs[1]",
    "executor": "initargs[1]",
}


def start_process(channel: str, obj: Any, ctx: Any) -> multiprocessing.process.BaseProcess:
    """Build the process of a channel (not started)."""
    if channel == "args":
        return ctx.Process(target=touch, args=(obj,))
    if channel == "kwargs":
        return ctx.Process(target=touch_kwargs, kwargs={"config": {"items": [Holder(obj)]}})
    if channel == "partial":
        return ctx.Process(target=call, args=(functools.partial(touch, obj),))
    if channel == "dataclass":
        return ctx.Process(target=touch_config, args=(Config(obj),))
    if channel == "subclass":
        return HOLDERS[ctx.get_start_method()](obj)
    raise ValueError(channel)


def noop(*args: Any, **kwargs: Any) -> None:
    """A target that receives objects and leaves them alone."""


def use_pipe(conn: Any) -> None:
    conn.send("hello")


def use_manager_objects(lock: Any, shared: Any) -> None:
    with lock:
        shared["child"] = True


def use_raw(value: Any, array: Any) -> None:
    value.value = 7
    array[0] = 7


def use_shared_memory(name: str, shm: Any) -> None:
    shm.buf[0] = 7


def reshare(lock: Any, methods: Any = None) -> None:
    """In a child: enable the sanitizer and hand the received lock to grandchildren (of
    every start method, or of ``methods``)."""
    import sys
    import warnings

    import mpsanitizer

    mpsanitizer.enable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for method in methods or METHODS:
            grandchild = multiprocessing.get_context(method).Process(target=touch, args=(lock,))
            grandchild.start()
            grandchild.join(60)
            if grandchild.exitcode != 0:
                sys.exit(2)
    if caught:
        print("\n".join(str(w.message) for w in caught), file=sys.stderr)
        sys.exit(3)


def report_building(queue: Any) -> None:
    """Put the thread idents the sanitizer thinks are building a composite here."""
    from mpsanitizer import origins

    queue.put(sorted(origins.building))


def exit_3_on_ints(*args: Any) -> None:
    """Exit with 3 if any argument (or item of a list argument) arrived as an int: what
    an elided pickle would give the child in place of a primitive."""
    items = [item for arg in args for item in (arg if isinstance(arg, list) else [arg])]
    raise SystemExit(3 if any(isinstance(item, int) for item in items) else 0)


class JobFailed(Exception):
    """An exception with a primitive among its arguments (pickled as its class's)."""


class StatefulQueue(multiprocessing.queues.Queue):
    """A Queue subclass that pickles itself (its locks included) through its own
    ``__getstate__``."""

    def __getstate__(self) -> Any:
        return super().__getstate__()

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)


class LocklessQueue(multiprocessing.queues.Queue):
    """A Queue subclass whose pickle holds none of its locks."""

    def __reduce__(self) -> Any:
        return (list, ())


class OwnSpawnProcess(multiprocessing.context.SpawnProcess):
    """A library's own Process class over spawn."""


class OwnNamedContext(multiprocessing.context.BaseContext):
    """A library's context with a name of its own, whose processes are spawned."""

    _name = "own"
    Process = OwnSpawnProcess


def put_own_stack(queue: Any) -> None:
    """Put the functions of the stack mpsanitizer would record here, outermost first."""
    from mpsanitizer import stacks

    queue.put([frame.function for frame in stacks.resolve(stacks.capture(32, 0))])


class SharedTablePickler(multiprocessing.reduction.ForkingPickler):
    """A program's ForkingPickler that pickles through copyreg's own table."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatch_table = copyreg.dispatch_table


class PortableLock(multiprocessing.synchronize.Lock):
    """A fork Lock subclass that a child receives as a threading.Lock."""

    def __reduce__(self) -> Any:
        return (threading.Lock, ())


def exit_3_unless_threading_lock(lock: Any) -> None:
    sys.exit(0 if type(lock) is type(threading.Lock()) else 3)
