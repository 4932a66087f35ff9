"""Which object a report names: the one the user made and handed over, with its path in
what the child receives, when it sits inside another tracked object."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.synchronize
from typing import List

import mp_helpers as h
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
NOT_FORK = ("spawn", "forkserver")


pytestmark = pytest.mark.usefixtures("sanitizer")
start = h.exit_code


def mismatches(proc) -> List[tuple]:
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert proc._popen is None  # no child
    return [(f.object_type, f.path, f.origin, f.created_at[-1].lineno) for f in info.value.findings]


def line_of(text: str) -> int:
    with open(__file__) as source:
        return next(n for n, line in enumerate(source, 1) if text in line and "line_of" not in line)


@pytest.mark.parametrize("target", NOT_FORK)
def test_a_fork_lock_given_to_a_value_or_condition_is_named_not_its_holder(target) -> None:
    ctx = multiprocessing.get_context(target)
    value = ctx.Value("i", 0, lock=FORK.Lock())  # the foreign lock
    condition = ctx.Condition(FORK.RLock())  # the foreign rlock
    proc = ctx.Process(target=h.noop, args=(value, condition))
    assert mismatches(proc) == [
        ("Lock", "args[0]._lock", "fork", line_of("# the foreign lock")),
        ("RLock", "args[1]._lock", "fork", line_of("# the foreign rlock")),
    ]


@pytest.mark.parametrize("target", NOT_FORK)
def test_a_fork_condition_holding_a_lock_of_the_child_context_is_named_itself(target) -> None:
    ctx = multiprocessing.get_context(target)
    condition = FORK.Condition(ctx.Lock())  # its own semaphores are fork's
    proc = ctx.Process(target=h.noop, args=(condition,))
    assert mismatches(proc) == [("Condition", "args[0]", "fork", line_of("own semaphores"))]


def test_a_spawn_lock_given_to_a_fork_value_warns_about_the_lock(mixing_warnings) -> None:
    value = FORK.Value("i", 0, lock=SPAWN.Lock())  # the spawn lock
    assert start(FORK.Process(target=h.touch, args=(value,))) == 0
    assert [
        (f.object_type, f.path, f.origin) for w in mixing_warnings for f in w.message.findings
    ] == [("Lock", "args[0]._lock", "spawn")]


@pytest.mark.parametrize("target", NOT_FORK)
def test_a_queue_subclass_pickling_itself_warns_once_in_warn_mode(target, mixing_warnings) -> None:
    mpsanitizer.enable(mode="warn")
    ctx = multiprocessing.get_context(target)
    proc = ctx.Process(target=h.noop, args=(h.StatefulQueue(ctx=FORK), h.LocklessQueue(ctx=FORK)))
    with pytest.raises(RuntimeError) if h.NATIVE_CHECK else contextlib.nullcontext():
        start(proc)
    found = [(f.object_type, f.path) for w in mixing_warnings for f in w.message.findings]
    assert found == [("StatefulQueue", "args[0]")]


def test_a_spawn_condition_around_a_spawn_lock_is_named_itself(mixing_warnings) -> None:
    condition = SPAWN.Condition(SPAWN.Lock())  # both spawn's
    assert start(FORK.Process(target=h.touch, args=(condition,))) == 0
    assert [(f.object_type, f.path) for w in mixing_warnings for f in w.message.findings] == [
        ("Condition", "args[0]")
    ]


class ForkishProcess(multiprocessing.context.ForkProcess):
    pass


class ForkishContext(multiprocessing.context.BaseContext):
    """A context of the program's own naming over fork's Process: ``get_context`` does not
    know its name."""

    _name = "forkish"
    Process = ForkishProcess


def test_the_fix_for_an_object_of_a_context_of_the_programs_naming_names_no_get_context(
    mixing_warnings,
) -> None:
    lock = ForkishContext().Lock()
    assert h.exit_code(SPAWN.Process(target=h.touch, args=(lock,))) == 0
    (warning,) = mixing_warnings
    text = str(warning.message)
    assert "or start the Process from the context that made the Lock" in text
    assert "get_context('forkish')" not in text


class ProgramsLock(multiprocessing.synchronize.Lock):
    """A program's own Lock: no context method makes it."""


@pytest.mark.parametrize("target", NOT_FORK)
def test_the_fix_for_a_programs_own_lock_class_makes_that_class_with_ctx(target) -> None:
    proc = multiprocessing.get_context(target).Process(
        target=h.noop, args=(ProgramsLock(ctx=FORK),)
    )
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    text = str(info.value)
    assert f"get_context({target!r}); ProgramsLock(..., ctx=ctx)" in text
    assert "ctx.Lock(" not in text and "ctx.ProgramsLock(" not in text


def test_a_path_too_long_for_a_line_keeps_its_ends_in_the_report() -> None:
    nested = [FORK.Lock()]
    for _ in range(100):
        nested = [nested]
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.noop, args=(nested,)).start()
    (finding,) = info.value.findings
    assert finding.path == "args[0]" + "[0]" * 101  # the data keeps it whole
    (line,) = [line for line in str(info.value).splitlines() if line.startswith("  #1 Lock at ")]
    assert "...(190 characters)..." in line and len(line) < 250
    assert line.startswith("  #1 Lock at args[0][0]") and "[0][0], created in a 'fork'" in line


def test_a_start_through_asyncio_run_in_executor_is_blamed_on_the_programs_line(
    mixing_warnings,
) -> None:
    import asyncio
    from concurrent.futures import ProcessPoolExecutor

    async def main(executor) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, abs, -1)  # the start

    executor = ProcessPoolExecutor(1, mp_context=FORK, initializer=h.noop, initargs=(SPAWN.Lock(),))
    with executor:
        asyncio.run(main(executor))
    (warning,) = mixing_warnings
    (finding,) = warning.message.findings
    assert finding.path == "initargs[0]"
    assert (finding.started_at[-1].filename, finding.started_at[-1].lineno) == (
        __file__,
        line_of("# the start"),
    )
    assert (warning.filename, warning.lineno) == (__file__, line_of("# the start"))


def test_the_fix_for_a_managers_initargs_names_a_manager_class_of_the_programs_own() -> None:
    from multiprocessing.managers import BaseManager

    class OwnManager(BaseManager):
        pass

    manager = OwnManager(ctx=SPAWN)
    with pytest.raises(ContextMismatchError) as info:
        manager.start(h.noop, (FORK.Lock(),))
    assert [f.path for f in info.value.findings] == ["initargs[0]"]
    text = str(info.value)
    assert "or start the Manager from the Lock's context:" in text
    assert (
        "multiprocessing.get_context('fork').Manager(), or for a manager class of your own" in text
    )
    assert "MyManager(ctx=multiprocessing.get_context('fork'))" in text
