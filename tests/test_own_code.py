"""Objects of the program's own making: the sanitizer runs none of their code, changes
nothing they pickle or share, and judges what their own pickling actually sends."""

from __future__ import annotations

import copyreg
import functools
import multiprocessing
import pickle
import threading
from multiprocessing import queues, reduction, synchronize
from typing import Any, List

import mp_helpers as h
import pytest

from mpsanitizer import ContextMismatchError, ContextMixingWarning

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
NOT_FORK = ("spawn", "forkserver")

pytestmark = pytest.mark.usefixtures("sanitizer")
CALLS: List[str] = []


@pytest.fixture(autouse=True)
def no_calls_yet():
    del CALLS[:]


def start(proc: Any) -> int:
    proc.start()
    proc.join(60)
    return proc.exitcode


@pytest.mark.parametrize("method", NOT_FORK)
def test_a_shared_dispatch_table_of_the_programs_pickler_is_left_as_it_was(
    monkeypatch, method
) -> None:
    monkeypatch.setattr(reduction, "ForkingPickler", h.SharedTablePickler)
    before = dict(copyreg.dispatch_table)
    ctx = multiprocessing.get_context(method)
    assert start(ctx.Process(target=h.noop, args=(ctx.Lock(),))) == 0
    assert copyreg.dispatch_table == before


class Blob:
    """Pickles its payload with a pickler of its own, inside the start's pickling."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __reduce__(self) -> Any:
        return (pickle.loads, (bytes(reduction.ForkingPickler.dumps(self.payload)),))


@pytest.mark.parametrize("method", NOT_FORK)
def test_a_semlock_pickled_by_a_nested_pickling_is_judged(method) -> None:
    ctx = multiprocessing.get_context(method)
    proc = ctx.Process(target=h.noop, args=(Blob(FORK.Lock()),))
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert [f.path for f in info.value.findings] == ["args[0].payload"]
    assert proc._popen is None  # no child


class DropsItsLock:
    def __init__(self, lock: Any) -> None:
        self.lock, self.n = lock, 1

    def __getstate__(self) -> Any:
        state = self.__dict__.copy()
        del state["lock"]
        return state


def test_a_lock_the_programs_getstate_drops_is_not_blamed_for_a_native_failure() -> None:
    with open(__file__) as unpicklable:
        proc = SPAWN.Process(target=h.noop, args=(DropsItsLock(FORK.Lock()), unpicklable))
        with pytest.raises(TypeError) as info:
            proc.start()
    assert not isinstance(info.value, ContextMismatchError)


def _first_failure(proc: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        proc.start()
    assert proc._popen is None  # no child
    return info.value


@pytest.mark.parametrize("method", NOT_FORK)
@pytest.mark.parametrize("thread_lock_first", [True, False], ids=["thread-lock-first", "after"])
def test_a_mismatch_in_a_start_that_fails_anyway_is_also_of_the_class_cpython_raises(
    method, thread_lock_first
) -> None:
    """``except TypeError`` around a start catches what it caught without mpsanitizer."""
    import mpsanitizer

    ctx = multiprocessing.get_context(method)

    def process() -> Any:
        held = [threading.Lock(), FORK.Lock()]
        return ctx.Process(target=h.noop, args=tuple(held if thread_lock_first else held[::-1]))

    mpsanitizer.disable()
    native = _first_failure(process())
    mpsanitizer.enable()
    ours = _first_failure(process())
    assert isinstance(ours, ContextMismatchError) and isinstance(ours, type(native))
    assert isinstance(ours, TypeError) == isinstance(native, TypeError)  # whichever comes first
    assert [f.path for f in ours.findings] == [f"args[{int(thread_lock_first)}]"]
    assert type(native) is (RuntimeError if h.NATIVE_CHECK and not thread_lock_first else TypeError)
    assert (
        type(ours).__qualname__ == "ContextMismatchError" and type(ours).__module__ == "mpsanitizer"
    )
    assert type(pickle.loads(pickle.dumps(ours))) is ContextMismatchError


@pytest.mark.parametrize("method", NOT_FORK)
def test_a_lock_subclass_that_pickles_as_something_else_reaches_its_child(method) -> None:
    ctx = multiprocessing.get_context(method)
    lock = h.PortableLock(ctx=FORK)
    assert start(ctx.Process(target=h.exit_3_unless_threading_lock, args=(lock,))) == 0


class StrictLock(synchronize.Lock):
    def __getattr__(self, name: str) -> Any:
        CALLS.append(name)
        raise AttributeError(name)


def test_a_lock_made_before_enable_is_judged_without_its_getattr(sanitizer) -> None:
    import mpsanitizer

    mpsanitizer.disable()
    lock = StrictLock(ctx=FORK)
    mpsanitizer.enable()
    with pytest.raises(ContextMismatchError):
        SPAWN.Process(target=h.noop, args=(lock,)).start()
    assert CALLS == []


class Key:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("no format")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_path_through_an_odd_attribute_name_runs_no_code_of_it(capfd) -> None:
    box = h.Config(lock=None)
    box.__dict__[Key()] = FORK.Lock()
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.noop, args=(box,)).start()
    assert info.value.findings[0].path == "args[0].<Key object>"
    assert "internal error" not in capfd.readouterr().err


class LoudDict(dict):
    def values(self) -> Any:
        CALLS.append("values")
        return dict.values(self)

    def __len__(self) -> int:
        CALLS.append("len")
        return dict.__len__(self)


class Plain:
    pass


class LoudQueue(queues.Queue):
    def __getattribute__(self, name: str) -> Any:
        CALLS.append(name)
        return object.__getattribute__(self, name)


class Ticket:
    def __reduce_ex__(self, protocol: int) -> Any:
        CALLS.append("reduce")
        return (Ticket, ())


def closing_over(lock: Any) -> Any:
    box = ((lock,),)

    def target(*args: Any) -> None:
        assert box

    return target


def test_a_fork_start_runs_no_code_of_what_it_hands_over_and_changes_nothing() -> None:
    keep = SPAWN.Lock()  # a primitive born outside fork: fork starts are checked
    plain = Plain()
    plain.__dict__ = LoudDict(x=1)
    error = ValueError("x")
    pickled = pickle.dumps(error)
    proc = FORK.Process(target=h.noop, args=(plain, LoudQueue(ctx=FORK), error))
    del CALLS[:]  # what the queue's own construction did
    assert start(proc) == 0
    with pytest.warns(ContextMixingWarning):  # its report names a path, by no reduction
        assert start(FORK.Process(target=closing_over(keep), args=(Ticket(),))) == 0
    assert CALLS == []
    assert pickle.dumps(error) == pickled


@pytest.mark.parametrize("method", NOT_FORK)
def test_a_dump_of_the_programs_own_still_pickles_the_process_and_is_checked(
    monkeypatch, method
) -> None:
    import mpsanitizer

    native, seen = reduction.dump, []

    def own_dump(obj: Any, file: Any, protocol: Any = None) -> None:
        seen.append(type(obj).__name__)
        native(obj, file, protocol)

    mpsanitizer.disable()
    monkeypatch.setattr(reduction, "dump", own_dump)
    mpsanitizer.enable()
    ctx = multiprocessing.get_context(method)
    assert start(ctx.Process(target=h.noop)) == 0
    assert seen[-1] == ctx.Process.__name__
    with pytest.raises(ContextMismatchError):
        ctx.Process(target=h.noop, args=(FORK.Lock(),)).start()


class PlainPickler(pickle.Pickler):
    """A program's pickler in place of ForkingPickler, with no dispatch_table of its own."""


@pytest.mark.parametrize("method", NOT_FORK)
@pytest.mark.parametrize(
    "replacement",
    [PlainPickler, functools.partial(reduction.ForkingPickler)],
    ids=["plain-pickler-class", "partial"],
)
def test_a_forking_pickler_the_program_replaced_is_used_and_still_checked(
    monkeypatch, method, replacement
) -> None:
    monkeypatch.setattr(reduction, "ForkingPickler", replacement)
    ctx = multiprocessing.get_context(method)
    assert start(ctx.Process(target=h.noop, args=(42, ctx.Lock()))) == 0
    proc = ctx.Process(target=h.noop, args=(FORK.Lock(),))
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert proc._popen is None
    assert [(f.object_type, f.path) for f in info.value.findings] == [("Lock", "args[0]")]
