"""The creation hooks: transparent constructors, one origin per object, per thread."""

from __future__ import annotations

import gc
import inspect
import multiprocessing
import sys
import threading
import weakref
from contextlib import contextmanager

import mp_helpers as h
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError, hooks, origins

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")


@pytest.fixture(autouse=True)
def always_off_after():
    yield
    mpsanitizer.disable()


def line_of_next_statement() -> int:
    return sys._getframe(1).f_lineno + 1


@contextmanager
def composite_under_construction_in_another_thread():
    """While the body runs, another thread is inside a hooked composite constructor."""
    inside, release = threading.Event(), threading.Event()

    def slow_composite():
        inside.set()
        release.wait(30)

    builder = threading.Thread(target=hooks.composite_hook(slow_composite))
    builder.start()
    assert inside.wait(30)
    try:
        yield
    finally:
        release.set()
        builder.join()


def mismatch(obj) -> ContextMismatchError:
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.touch, args=(obj,)).start()
    return info.value


@pytest.mark.parametrize("owner, name", h.creation_constructors())
def test_hooks_keep_the_constructors_name_signature_and_defaults(owner, name) -> None:
    original = vars(owner)[name]
    mpsanitizer.enable()
    hook = vars(owner)[name]
    assert hook is not original and hook.__wrapped__ is original
    assert (hook.__name__, hook.__qualname__, hook.__module__, hook.__doc__) == (
        original.__name__,
        original.__qualname__,
        original.__module__,
        original.__doc__,
    )
    # the hook's own parameters, not the ones inspect finds through __wrapped__
    assert inspect.signature(hook, follow_wrapped=False) == inspect.signature(original)
    assert hook.__defaults__ == original.__defaults__
    assert hook.__kwdefaults__ == original.__kwdefaults__


def test_a_signature_that_cannot_be_spelled_gets_a_forwarding_hook() -> None:
    calls = []

    def clashing(self, _mps_original, *, ctx=None):
        calls.append((self, _mps_original, ctx))
        return "made"

    def bare(*args, **kwargs):
        calls.append((args, kwargs))
        return "made"

    assert hooks.composite_hook(clashing)(1, 2, ctx=3) == "made"
    assert hooks.composite_hook(bare)(1, x=2) == "made"
    assert calls == [(1, 2, 3), ((1,), {"x": 2})]


@pytest.mark.parametrize("package", ["multiprocessing", "multiprocess", "billiard"])
def test_semlocks_init_is_recompiled_from_its_own_source_with_the_record_at_its_end(
    package,
) -> None:
    """One frame, CPython's own file, lines and qualified names, for a creation that fails."""
    synchronize = pytest.importorskip(f"{package}.synchronize")
    original = synchronize.SemLock.__init__
    hook = hooks.semlock_hook(original)
    assert hook.__code__.co_filename == original.__code__.co_filename
    assert hook.__code__.co_firstlineno == original.__code__.co_firstlineno
    assert hook.__globals__ is original.__globals__
    nested = [c for c in hook.__code__.co_consts if hasattr(c, "co_code")]
    assert all(
        getattr(c, "co_qualname", "SemLock.__init__.").startswith("SemLock.__init__.")
        for c in nested
    )
    if package == "multiprocessing":  # the one enable() puts on records each SemLock
        mpsanitizer.enable()
        installed = vars(synchronize.SemLock)["__init__"]
        assert installed.__code__.co_filename == original.__code__.co_filename
        assert origins.origin_of(FORK.Lock())[origins.METHOD] == "fork"


def test_a_semlock_init_whose_file_is_not_what_runs_gets_a_forwarding_hook(tmp_path) -> None:
    """An edited or missing source: the code compiled from it is not the original's."""
    source = tmp_path / "edited.py"
    source.write_text("class SemLock:\n    def __init__(self, kind, *, ctx):\n        pass\n")
    namespace: dict = {"__name__": "edited"}
    exec(compile("class SemLock:\n    def __init__(self, kind, *, ctx):\n        x = 1\n",
                 str(source), "exec"), namespace)  # fmt: skip
    original = namespace["SemLock"].__init__
    hook = hooks.semlock_hook(original)
    assert hook.__code__.co_filename.startswith("<mpsanitizer hook")
    assert hooks._inline(original, hooks._SEMLOCK_TAIL) is None
    source.unlink()
    assert hooks._inline(original, hooks._SEMLOCK_TAIL) is None


def test_every_inner_semlock_shares_the_one_origin_of_its_object() -> None:
    mpsanitizer.enable()
    queue = FORK.JoinableQueue()
    inner = [queue._rlock, queue._wlock, queue._sem, queue._unfinished_tasks]
    inner += [queue._cond._lock, queue._cond._sleeping_count, queue._cond._wait_semaphore]
    records = {id(origins.origin_of(lock)) for lock in inner}
    assert len(records) == 1
    assert origins.origin_of(queue._rlock)[origins.METHOD] == "fork"


def test_a_lock_made_while_another_thread_builds_a_composite_has_its_own_origin() -> None:
    mpsanitizer.enable()
    with composite_under_construction_in_another_thread():
        line = line_of_next_statement()
        lock = FORK.Lock()
    (finding,) = mismatch(lock).findings
    assert (finding.created_at[-1].function, finding.created_at[-1].lineno) == (
        "test_a_lock_made_while_another_thread_builds_a_composite_has_its_own_origin",
        line,
    )
    assert finding.origin == "fork"


def test_composites_built_by_two_threads_at_once_keep_their_own_stacks() -> None:
    mpsanitizer.enable()
    made = {}
    barrier = threading.Barrier(2)

    def build(name):
        barrier.wait()
        for _ in range(50):
            made[name] = FORK.Queue() if name == "queue" else FORK.Event()

    threads = [threading.Thread(target=build, args=(n,)) for n in ("queue", "event")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, obj in made.items():
        (finding,) = mismatch(obj).findings
        assert finding.created_at[-1].function == "build"
        assert finding.object_type == ("Queue" if name == "queue" else "Event")
        locks = [obj._rlock, obj._wlock, obj._sem] if name == "queue" else [obj._flag]
        assert all(origins.origin_of(lock)[origins.METHOD] == "fork" for lock in locks)


def test_a_fork_child_forgets_composites_of_threads_that_did_not_survive() -> None:
    mpsanitizer.enable()
    with composite_under_construction_in_another_thread():
        queue = FORK.SimpleQueue()
        child = FORK.Process(target=h.report_building, args=(queue,))
        child.start()
        child.join(60)
        in_child = queue.get()
    assert child.exitcode == 0
    assert in_child == []


def test_the_code_of_a_creation_site_is_not_kept_once_its_primitive_is_gone() -> None:
    mpsanitizer.enable()
    namespace = {"ctx": FORK}
    exec(compile("def make():\n    return ctx.Lock()\n", "<generated>", "exec"), namespace)
    code = weakref.ref(namespace["make"].__code__)
    lock = namespace["make"]()
    assert origins.origin_of(lock)[origins.STACK] is code()  # the record holds it, for now
    del lock, namespace
    gc.collect()
    assert code() is None


def test_the_dump_wrapper_takes_reduction_dumps_file_lines_and_name() -> None:
    from multiprocessing import reduction

    from mpsanitizer.dump_hook import dump_hook

    code = reduction.dump.__code__
    wrapper = dump_hook(reduction.dump, lambda wrapped, args, kwargs: None)
    lines = {line for line in _lines_of(wrapper.__code__) if line != code.co_firstlineno}
    assert wrapper.__code__.co_filename == code.co_filename
    assert (wrapper.__code__.co_firstlineno, wrapper.__name__) == (code.co_firstlineno, "dump")
    assert lines == {line for line in _lines_of(code) if line != code.co_firstlineno}


def test_a_dump_of_another_shape_gets_a_wrapper_of_our_own_name_that_forwards() -> None:
    from mpsanitizer.dump_hook import dump_hook

    calls = []

    def dump(obj, file, protocol=None, *args):  # multiprocess's has more parameters
        calls.append((obj, file, protocol, args))

    wrapper = dump_hook(dump, lambda wrapped, args, kwargs: None)
    wrapper(dump, None, (1, 2), {"protocol": 3})
    assert wrapper.__code__.co_filename == "<mpsanitizer: reduction.dump>"
    assert calls == [(1, 2, 3, ())]


def _lines_of(code):
    import dis

    return {line for _, line in dis.findlinestarts(code) if line is not None}
