"""What the checks look through: containers of every kind, subclasses, slots, process
attributes, custom reductions; and what they must not do (run the objects' code, keep
them alive)."""

from __future__ import annotations

import array
import collections
import gc
import multiprocessing
import multiprocessing.queues
import operator
import pickle
import re
import types
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import List

import mp_helpers as h
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError, ContextMixingWarning, walk

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
CALLS: List[str] = []


@pytest.fixture(autouse=True)
def sanitizer_and_no_calls():
    mpsanitizer.enable()
    del CALLS[:]
    yield
    mpsanitizer.disable()


def start(proc) -> int:
    proc.start()
    proc.join(60)
    return proc.exitcode


class LoudDict(dict):
    def items(self):
        CALLS.append("LoudDict.items")
        return super().items()

    def __iter__(self):
        CALLS.append("LoudDict.__iter__")
        return super().__iter__()


class LoudList(list):
    def __getitem__(self, index):
        CALLS.append("LoudList.__getitem__")
        return super().__getitem__(index)

    def __iter__(self):
        CALLS.append("LoudList.__iter__")
        return super().__iter__()


class LoudSet(set):
    def __iter__(self):
        CALLS.append("LoudSet.__iter__")
        return super().__iter__()


class Slotted:
    __slots__ = ("item",)

    def __init__(self, item) -> None:
        vars(Slotted)["item"].__set__(self, item)  # past a subclass's property


class Shadowing(Slotted):
    __slots__ = ()

    @property  # type: ignore[override]
    def item(self):
        CALLS.append("Shadowing.item")
        return None


class Mangled:
    __slots__ = ("__box",)

    def __init__(self, item) -> None:
        self.__box = item


def holders(obj):
    """(container, path of ``obj`` inside args[0]) pairs: subclasses whose methods log."""
    loud_set = LoudSet()
    loud_set.add(obj)
    return [
        (LoudDict(key=obj), "args[0]['key']"),
        (LoudList([obj]), "args[0][0]"),
        (loud_set, "args[0].<item 0>"),
        (Shadowing(obj), "args[0].item"),
        (collections.deque([obj]), "args[0][0]"),
        (Mangled(obj), "args[0].__box"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_a_fork_start_runs_no_code_of_the_containers_it_looks_into(index) -> None:
    lock = SPAWN.Lock()  # born outside fork: fork starts are checked
    holder, path = holders(lock)[index]
    with pytest.warns(ContextMixingWarning, match="Lock at " + re.escape(path)):
        assert start(FORK.Process(target=h.noop, args=(holder,))) == 0
    assert CALLS == []


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5])  # Shadowing pickles its property's None
def test_a_spawn_start_names_the_path_inside_any_container(index) -> None:
    holder, path = holders(FORK.Lock())[index]
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.noop, args=(holder,)).start()
    assert [f.path for f in info.value.findings] == [path]


class Worker(multiprocessing.Process):
    """A Process subclass whose attributes share names with words in BaseProcess's code."""

    def __init__(self, ctx, **attrs) -> None:
        super().__init__()
        self._start_method = ctx.get_start_method()  # as ctx.Process would make it
        self._Popen = ctx.Process._Popen
        for name, value in attrs.items():
            setattr(self, name, value)

    def run(self) -> None:
        pass


@pytest.mark.parametrize("name", ["info", "context", "count", "util", "queue"])
def test_process_subclass_attributes_are_checked_whatever_their_name(name) -> None:
    with pytest.warns(ContextMixingWarning, match=rf"Queue at self\.{name}\b"):
        assert start(Worker(FORK, **{name: SPAWN.Queue()})) == 0
    with pytest.raises(ContextMismatchError) as info:
        Worker(SPAWN, **{name: FORK.Queue()}).start()
    assert [f.path for f in info.value.findings] == [f"self.{name}"]


class SlottedWorker(Worker):
    __slots__ = ("lock",)


def test_slots_of_a_process_subclass_are_checked() -> None:
    worker = SlottedWorker(FORK)
    worker.lock = SPAWN.Lock()
    with pytest.warns(ContextMixingWarning, match=r"Lock at self\.lock\b"):
        assert start(worker) == 0
    worker = SlottedWorker(SPAWN)
    worker.lock = FORK.Lock()
    with pytest.raises(ContextMismatchError) as info:
        worker.start()
    assert [f.path for f in info.value.findings] == ["self.lock"]


class LoudTarget:
    """A callable target that logs every attribute read of its own."""

    def __getattribute__(self, name):
        CALLS.append(f"LoudTarget.{name}")
        return object.__getattribute__(self, name)

    def __call__(self) -> None:
        pass


def test_a_fork_start_reads_nothing_of_a_callable_target() -> None:
    SPAWN.Lock()  # born outside fork: fork starts are checked
    with pytest.warns(ContextMixingWarning, match="Lock at target.lock"):
        target = LoudTarget()
        object.__setattr__(target, "lock", SPAWN.Lock())
        del CALLS[:]
        assert start(FORK.Process(target=target)) == 0
    assert [call for call in CALLS if not call.endswith("__call__")] == []


_HIDDEN = {}


class Hidden:
    """Reachable only through its reduction's list items (``__reduce__``'s 4th item)."""

    __slots__ = ("__weakref__",)

    def __init__(self, *items) -> None:
        _HIDDEN[id(self)] = list(items)

    def __reduce__(self):
        return Hidden, (), None, iter(_HIDDEN[id(self)])

    def extend(self, items) -> None:
        _HIDDEN[id(self)] = list(items)


def test_an_offender_reached_through_reduce_list_items_is_named() -> None:
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.noop, args=(Hidden(1, FORK.Event()),)).start()
    assert [(f.object_type, f.path) for f in info.value.findings] == [("Event", "args[0][1]")]


class Resource:
    pass


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_arguments_are_not_kept_alive_by_the_check(method) -> None:
    ctx = multiprocessing.get_context(method)
    resource = Resource()
    alive = weakref.ref(resource)
    proc = ctx.Process(target=h.noop, args=(resource,))
    del resource
    gc.disable()  # nothing but reference counting may free it, as natively
    try:
        proc.start()
        assert alive() is None  # start() drops the process's references to its args
    finally:
        gc.enable()
        proc.join(60)
    assert proc.exitcode == 0


def test_offenders_are_not_kept_alive_by_a_caught_error() -> None:
    resource = Resource()
    alive = weakref.ref(resource)
    proc = SPAWN.Process(target=h.noop, args=(resource, FORK.Lock()))
    gc.disable()
    try:
        with pytest.raises(ContextMismatchError) as info:
            proc.start()
        proc._args = ()
        del resource
        assert alive() is None
        assert info.value.findings
    finally:
        gc.enable()


STAY_NATIVE = """
import multiprocessing, warnings
from multiprocessing import popen_fork
import mpsanitizer
from mpsanitizer import lazy

def noop(*args):
    pass

mpsanitizer.enable()
fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
native = lazy.unwrap(popen_fork.Popen.__dict__["_launch"])
proc = fork.Process(target=noop, args=(fork.Lock(),))
proc.start()
proc.join()
print(popen_fork.Popen.__dict__["_launch"] is native)  # nothing can be wrong yet
lock = spawn.Lock()  # from now on a fork child can be handed the wrong kind
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    proc = fork.Process(target=noop, args=(lock,))
    proc.start()
    proc.join()
print([type(w.message).__name__ for w in caught], proc.exitcode)
"""


def test_fork_starts_stay_native_until_a_primitive_is_born_outside_fork(tmp_path) -> None:
    import subprocess
    import sys

    (tmp_path / "prog.py").write_text(STAY_NATIVE)
    result = subprocess.run(
        [sys.executable, "prog.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n['ContextMixingWarning'] 0\n"


class NamedQueue(multiprocessing.queues.Queue):
    """Pickles as its name: what the child gets holds no semaphore."""

    def __init__(self, name, ctx) -> None:
        super().__init__(ctx=ctx)
        self.name = name

    def __reduce__(self):
        return str, (self.name,)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_subclass_that_pickles_itself_is_judged_by_what_it_sends(method) -> None:
    """And reported as itself, once, when what it sends holds its locks."""
    ctx = multiprocessing.get_context(method)
    assert start(ctx.Process(target=h.noop, args=(NamedQueue("jobs", FORK),))) == 0
    with pytest.raises(ContextMismatchError) as info:
        ctx.Process(target=h.noop, args=(h.StatefulQueue(ctx=FORK),)).start()
    assert [(f.object_type, f.path) for f in info.value.findings] == [("StatefulQueue", "args[0]")]


class Holder:
    def __init__(self, lock) -> None:
        self.lock = lock

    def run(self) -> None:
        pass


def _cycle(lock):
    ring = [None, lock]
    ring[0] = ring  # a list that holds itself: the walk must not go round
    return ring


FORK_SHAPES = {
    "dict key": (
        lambda lock: {"target": h.noop, "args": ({lock: 1},)},
        r"args\[0\]\.keys\(\)\[0\]",
    ),
    "bound method target": (lambda lock: {"target": Holder(lock).run}, r"target\.__self__\.lock"),
    "cycle": (lambda lock: {"target": h.noop, "args": (_cycle(lock),)}, r"args\[0\]\[1\]"),
    "nested kwargs": (
        lambda lock: {"target": h.noop, "kwargs": {"cfg": {"inner": [Holder(lock)]}}},
        r"kwargs\['cfg'\]\['inner'\]\[0\]\.lock",
    ),
    "namespace in a list": (
        lambda lock: {"target": h.noop, "args": ([types.SimpleNamespace(lock=lock)],)},
        r"args\[0\]\[0\]\.lock",
    ),
    "argument of an exception": (
        lambda lock: {"target": h.noop, "args": (h.JobFailed("job 7", lock),)},
        r"args\[0\]\.args\[1\]",
    ),
    "mappingproxy": (
        lambda lock: {"target": h.noop, "args": (types.MappingProxyType({"l": lock}),)},
        r"args\[0\]\['l'\]",
    ),
    "value of a WeakValueDictionary": (
        lambda lock: {"target": h.noop, "args": (_weakly(weakref.WeakValueDictionary, lock),)},
        r"args\[0\]\.data\['held'\]\(\)\.lock",
    ),
    "member of a WeakSet": (
        lambda lock: {"target": h.noop, "args": (_weakly(weakref.WeakSet, lock),)},
        r"args\[0\]\.data\.<item 0>\(\)\.lock",
    ),
    "closure of the target": (
        lambda lock: {"target": _closing_over(lock)},
        r"target\.<closure lock>",
    ),
    "default of a lambda target": (
        lambda lock: {"target": lambda held=lock: None},
        r"target\.__defaults__\[0\]",
    ),
    "keyword default of a function argument": (
        lambda lock: {"target": h.call, "args": (_keyword_default(lock),)},
        r"args\[0\]\.__kwdefaults__\['held'\]",
    ),
    "key whose repr raises": (
        lambda lock: {"target": h.noop, "args": ({Unprintable(): lock},)},
        r"args\[0\]\[<Unprintable object>\]",
    ),
    "object of a metaclass that refuses lookups": (
        lambda lock: {"target": h.noop, "args": (Guarded(lock),)},
        r"args\[0\]\.held",
    ),
}


ALIVE: List[object] = []  # what the weak containers of FORK_SHAPES refer to


def _weakly(container, lock):
    holder = Holder(lock)
    ALIVE.append(holder)
    found = container()
    if isinstance(found, weakref.WeakSet):
        found.add(holder)
    else:
        found["held"] = holder
    return found


def _closing_over(lock):
    def run():
        return lock

    return run


def _keyword_default(lock):
    def run(*, held=lock):
        return None

    return run


class Unprintable:
    def __repr__(self):
        CALLS.append("Unprintable.__repr__")
        raise ValueError("no repr")


class Refusing(type):
    def __getattribute__(cls, name):
        CALLS.append(f"Refusing.__getattribute__({name})")
        return type.__getattribute__(cls, name)


class Guarded(metaclass=Refusing):
    def __init__(self, held) -> None:
        self.held = held


@pytest.mark.parametrize("shape", FORK_SHAPES)
def test_a_fork_start_finds_a_foreign_lock_in_any_shape(shape) -> None:
    make, path = FORK_SHAPES[shape]
    with pytest.warns(ContextMixingWarning, match="Lock at " + path + ","):
        proc = FORK.Process(**make(SPAWN.Lock()))
        del CALLS[:]
        assert start(proc) == 0
    assert CALLS == []


@pytest.mark.parametrize(
    "shape", ["key whose repr raises", "object of a metaclass that refuses lookups"]
)
def test_a_spawn_report_runs_no_code_of_keys_or_metaclasses(shape) -> None:
    """Only what pickling them runs anyway (a class's ``__module__`` and ``__qualname__``)."""
    make, path = FORK_SHAPES[shape]
    kwargs = make(FORK.Lock())
    pickle.dumps(make(None)["args"])
    pickling_runs = set(CALLS)
    proc = SPAWN.Process(**kwargs)
    del CALLS[:]
    with pytest.raises(ContextMismatchError, match="Lock at " + path + ","):
        proc.start()
    assert set(CALLS) <= pickling_runs


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_report_names_a_lock_among_an_exceptions_arguments(method) -> None:
    proc = multiprocessing.get_context(method).Process(
        target=h.noop, args=(h.JobFailed("job 7", FORK.Lock()),)
    )
    with pytest.raises(ContextMismatchError, match=r"Lock at args\[0\]\.args\[1\],"):
        proc.start()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_report_names_a_lock_that_only_a_c_objects_reduction_reaches(method) -> None:
    """A C object whose reduction lists objects (``methodcaller``; a numpy array of dtype
    object) is reduced again to name the path; one with a plain-data buffer never is."""
    proc = multiprocessing.get_context(method).Process(
        target=h.noop, args=(operator.methodcaller("wait", 1, FORK.Lock()),)
    )
    with pytest.raises(ContextMismatchError, match=r"Lock at args\[0\]\.<reduce args>\[2\],"):
        proc.start()
    assert not walk._holds_objects_natively(array.array("d", range(1000)))
    assert not walk._holds_objects_natively(memoryview(b"data"))


def test_a_fork_start_finds_each_foreign_lock_once() -> None:
    lock = SPAWN.Lock()
    with pytest.warns(ContextMixingWarning) as record:
        assert start(FORK.Process(target=h.noop, args=(lock, [lock], {"again": lock}))) == 0
    findings = [f for w in record for f in getattr(w.message, "findings", ())]
    assert [f.path for f in findings] == ["args[0]"]


class Bulky:
    """Data with a reducer registered for ForkingPickler (as torch registers one for its
    tensors) and a costly reduction of its own, which pickling never uses."""

    def __reduce__(self):
        CALLS.append("Bulky.__reduce__")
        return Bulky, ()


def _reduce_bulky(obj):
    CALLS.append("registered reducer")
    return Bulky, ()


class Sharded:
    """Reaches its lock only through its own ``__getstate__``."""

    def __init__(self, lock) -> None:
        self.data = Bulky()
        SHARD_LOCKS[id(self)] = lock

    def __getstate__(self):
        return {"data": self.data, "lock": SHARD_LOCKS[id(self)]}


SHARD_LOCKS: dict = {}


def test_naming_a_path_through_custom_state_runs_no_reduction_pickling_would_not(
    monkeypatch,
) -> None:
    from multiprocessing import reduction

    monkeypatch.setitem(reduction.ForkingPickler._extra_reducers, Bulky, _reduce_bulky)
    proc = SPAWN.Process(target=h.noop, args=(Sharded(FORK.Lock()),))
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert [f.path for f in info.value.findings] == ["args[0].<state>['lock']"]
    assert CALLS == ["registered reducer"]  # what the pickling itself ran


def test_an_argument_after_a_huge_one_still_gets_its_path() -> None:
    """The path lookup goes breadth first: args[1] is met before args[0]'s 250k items."""
    rows = [[i] for i in range(250_000)]
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.noop, args=(rows, FORK.Lock())).start()
    assert [f.path for f in info.value.findings] == ["args[1]"]


def test_a_hand_off_warned_about_is_not_located_again_at_each_start(monkeypatch) -> None:
    """Each later start from the same site skips the report: its path lookup can cost as
    much as walking all the arguments."""
    from mpsanitizer import walk

    located = []
    real_locate = walk.locate

    def counting(proc, wanted, *args, **kwargs):
        located.append(len(wanted))
        return real_locate(proc, wanted, *args, **kwargs)

    monkeypatch.setattr(walk, "locate", counting)
    lock = SPAWN.Lock()
    with pytest.warns(ContextMixingWarning) as record:
        for _ in range(3):
            assert start(FORK.Process(target=h.noop, args=(lock,))) == 0
    assert len([w for w in record if w.category is ContextMixingWarning]) == 1
    assert located == [1]


class Service:
    """Holds a spawn Pool and executor, whose own queues a fork child inherits with it."""

    def __init__(self, lock) -> None:
        self.pool = SPAWN.Pool(1)
        self.executor = ProcessPoolExecutor(1, mp_context=SPAWN)
        self.executor.submit(abs, 1).result()
        self.lock = lock

    def run(self) -> None:
        pass


def test_a_pool_or_executor_a_fork_child_inherits_is_not_reported_by_its_own_queues(
    mixing_warnings,
) -> None:
    service = Service(SPAWN.Lock())
    try:
        assert start(FORK.Process(target=service.run)) == 0
    finally:
        service.pool.terminate()
        service.executor.shutdown()
    found = [(f.object_type, f.path) for w in mixing_warnings for f in w.message.findings]
    assert found == [("Lock", "target.__self__.lock")]  # the program's own, alone
