"""The optional C extension (mpsanitizer/_native.c) against the Python it stands in for."""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import types
import weakref
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import pytest

import mpsanitizer
from mpsanitizer import extension, forkwalk, origins, stacks

ROOT = Path(__file__).resolve().parent.parent
COMPILER = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc")[0]


def both(depth: int, composite: bool = False) -> List[Callable[..., List[Any]]]:
    fast = stacks.record_capturer(depth, composite, origins.tracker, origins._next_serial)
    if fast is None:
        pytest.skip("the C capture is not built in this environment")
    head = ("method", "_tracker.pid", "~_next_serial()" if composite else "_next_serial()")
    slow = stacks.capturer(depth, head, _tracker=origins.tracker, _next_serial=origins._next_serial)
    return [fast, slow]


def records(depth: int, skip: int, call: Callable[[Callable[[], Any]], Any], **kw: Any) -> list:
    """The records of the C and the Python capture made from one call shape: the same
    frames; the innermost (with ``skip`` 0) calls them from one line."""
    fast, slow = both(depth, **kw)
    made = call(lambda: (fast(skip, "fork"), slow(skip, "fork")))
    return list(made)


def nested(depth: int, fn: Callable[[], Any]) -> Any:
    return fn() if depth == 0 else nested(depth - 1, fn)


def through_internal_frames(fast: Callable, slow: Callable) -> Any:
    """Both captures called from two frames of a module named as multiprocessing's, under
    one whose globals have no ``__name__``."""
    internal: dict = {"__name__": "multiprocessing.made_up", "fast": fast, "slow": slow}
    source = "def inner():\n    return fast(0, 'fork'), slow(0, 'fork')\n"
    exec(source + "def outer():\n    return inner()\n", internal)
    nameless: dict = {"outer": internal["outer"]}
    exec("def nameless():\n    return outer()\n", nameless)
    return nameless["nameless"]()


def in_a_thread(fn: Callable[[], Any]) -> Any:
    made = []
    thread = threading.Thread(target=lambda: made.append(fn()))
    thread.start()
    thread.join()
    return made[0]


def same(fast: list, slow: list) -> None:
    assert fast[:2] == slow[:2]
    assert fast[origins.SERIAL] != slow[origins.SERIAL]  # each took its own
    assert (fast[origins.SERIAL] < 0) == (slow[origins.SERIAL] < 0)
    assert lines(fast) == lines(slow)
    assert fast[origins.STACK + 2 :] == slow[origins.STACK + 2 :]  # the caller's offsets too


def lines(record: list) -> list:
    """(code, line) of each frame: the innermost frame's two calls share a line only."""
    stack = record[origins.STACK :]
    return [(code, stacks.line_of(code, lasti)) for code, lasti in zip(stack[::2], stack[1::2])]


@pytest.mark.parametrize("depth", [1, 8, 256])
@pytest.mark.parametrize("skip", [0, 1, 3, 10_000])
def test_the_c_and_python_captures_make_the_same_record(depth: int, skip: int) -> None:
    fast, slow = records(depth, skip, lambda f: nested(20, f))
    same(fast, slow)
    if skip == 10_000:
        assert len(fast) == origins.STACK  # above the stack's top: no frame
    else:
        assert len(fast) > origins.STACK


def test_the_c_and_python_captures_skip_the_same_frames() -> None:
    fast, slow = through_internal_frames(*both(8))
    same(fast, slow)
    assert fast[origins.STACK + 1] == slow[origins.STACK + 1]  # one call of `outer`'s
    names = [code.co_name for code in fast[origins.STACK :: 2]]
    assert names[:2] == ["nameless", "through_internal_frames"]


def test_the_c_and_python_captures_are_the_same_in_a_thread() -> None:
    same(*records(8, 0, in_a_thread))


def test_a_composites_c_record_has_a_negative_serial() -> None:
    fast, slow = records(8, 0, lambda f: f(), composite=True)
    same(fast, slow)
    assert fast[origins.SERIAL] < 0


@pytest.mark.skipif(
    shutil.which(COMPILER) is None or bool(os.environ.get(extension.PURE_PYTHON)),
    reason="no C compiler: the package was built pure Python",
)
def test_the_c_capture_is_built_and_used_where_there_is_a_compiler() -> None:
    mpsanitizer.enable()
    try:
        assert type(origins.tracker.make).__name__ == "builtin_function_or_method"
    finally:
        mpsanitizer.disable()


def test_a_report_is_the_same_with_the_python_capture() -> None:
    example = ROOT / "docs" / "examples" / "fork_lock_to_spawn.py"

    def report(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mpsanitizer", str(example)],
            capture_output=True, text=True, timeout=120, env={**os.environ, **env},
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        return re.sub(r"\b(pid|process) \d+", r"\1 N", done.stderr)

    pure = report(**{extension.PURE_PYTHON: "1"})
    assert "created at" in pure and "line 12, in main" in pure
    assert report() == pure


# The fork walk in C (fork_walk) against forkwalk's Python walk, on the same process objects.

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")


class Plain:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class WithAttributes(FORK.Process):  # type: ignore[misc,name-defined]
    def __init__(self, *args: Any, extra: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra


def shapes() -> List[Tuple[Any, Optional[bool]]]:
    """Process objects whose arguments hold primitives at many places, with cycles,
    sharing, closures, defaults and the walk's limits (48 objects, 16 per container)."""
    lock, queue, event = SPAWN.Lock(), FORK.Queue(), SPAWN.Event()
    cycle: List[Any] = [lock]
    cycle.append(cycle)

    def closure() -> Any:
        return event

    def defaults(a: Any = (queue,), *, b: Any = {"k": lock}) -> None:  # noqa: B006
        pass

    deep: Any = lock
    for _ in range(60):
        deep = [deep]
    wide = [Plain(n=i) for i in range(20)] + [lock]
    made = [
        FORK.Process(target=print, args=(1, "x", {"a": 2})),
        FORK.Process(target=print, args=(lock,)),
        FORK.Process(target=print, args=(1, [2, (3, {"q": queue})]), kwargs={"e": event}),
        FORK.Process(target=print, args=(Plain(a=Plain(b=[lock, event])),)),
        FORK.Process(target=print, args=(cycle, cycle)),
        FORK.Process(target=closure),
        FORK.Process(target=defaults),
        FORK.Process(target=print, args=(deep,)),
        FORK.Process(target=print, args=(wide,)),
        FORK.Process(target=print, args=([lock] * 5, {i: i for i in range(10)}, queue)),
        FORK.Process(target=print, args=(b"x", 2.5, None, True)),
        WithAttributes(target=print, extra=[queue, Plain(lock=lock)]),
        FORK.Process(target=Plain(q=queue).__init__, args=(functools.partial(print, lock),)),
    ]
    either = [  # plain (its __dict__) on 3.13, inspected before
        FORK.Process(target=print, args=(types.SimpleNamespace(lock=lock),)),
    ]
    inspected = [  # what only the Python walk looks into
        FORK.Process(target=print, args=({i: lock for i in range(20)},)),  # a dict over 16
        FORK.Process(target=print, args=(weakref.ref(Plain), Plain)),
        FORK.Process(target=print, args=(frozenset([lock]),)),
    ]
    return [(p, True) for p in made] + [(p, None) for p in either] + [(p, False) for p in inspected]


def python_walk(proc: Any) -> Optional[List[Any]]:
    roots = forkwalk._roots(proc, forkwalk.IN_FORK)
    if roots is None:
        return None
    limits = (forkwalk.FORK_BUDGET, forkwalk.FORK_PER_CONTAINER)
    return forkwalk.tracked(roots, *limits, forkwalk.IN_FORK)


def c_walk(proc: Any) -> Optional[Any]:
    native = extension.get()
    if native is None:
        pytest.skip("the C extension is not built in this environment")
    limits = (forkwalk.FORK_BUDGET, forkwalk.FORK_PER_CONTAINER)
    return native.fork_walk(proc, *limits, forkwalk.IN_FORK)


def test_the_c_fork_walk_finds_what_the_python_walk_finds() -> None:
    mpsanitizer.enable()
    try:
        made = shapes()
        for proc, _ in made:
            python_walk(proc)  # which learns the classes met
        for proc, in_c in made:
            expected = python_walk(proc)
            found = c_walk(proc)
            assert in_c is None or (found is not None) == in_c, proc._args
            if found is not None:
                assert [id(obj) for obj in found] == [id(obj) for obj in expected], proc._args
        assert sum(bool(python_walk(proc)) for proc, _ in made) >= 12  # most hold primitives
    finally:
        mpsanitizer.disable()


def test_the_c_fork_walk_leaves_to_python_what_it_cannot_judge() -> None:
    mpsanitizer.enable()
    try:
        fresh = type("Fresh", (), {})()  # a class the table has not learned yet
        proc = FORK.Process(target=print, args=(fresh,))
        python_walk(FORK.Process(target=print))  # the Process class itself is learned
        assert c_walk(proc) is None
        python_walk(proc)  # learns Fresh
        assert list(c_walk(proc)) == []
        big = FORK.Process(target=print, args=({i: i for i in range(20)},))
        assert c_walk(big) is None  # a dict over 16 items is cut by inspection
        assert c_walk(object()) is None  # not a process object
    finally:
        mpsanitizer.disable()


class ForkPopen:
    method = "fork"


class SpawnPopen(ForkPopen):
    method = "spawn"


class PropertyPopen(ForkPopen):
    @property
    def method(self) -> str:  # type: ignore[override]
        return "fork"


def test_the_c_fork_check_asks_the_popen_class_and_hands_over_what_it_finds() -> None:
    if extension.get() is None:
        pytest.skip("the C extension is not built in this environment")
    mpsanitizer.enable()
    try:
        calls: List[Tuple[Any, Any, list]] = []
        error = RuntimeError("reported")

        def on_found(popen: Any, proc: Any, found: list) -> BaseException:
            calls.append((popen, proc, list(found)))
            return error

        check = forkwalk.fork_check(on_found)
        assert type(check).__name__ == "builtin_function_or_method"  # the C one
        lock = SPAWN.Lock()
        proc = FORK.Process(target=print, args=(1, lock))
        for popen in (ForkPopen(), PropertyPopen()):  # the property: the Python check
            assert check(popen, proc) is error
            assert calls.pop() == (popen, proc, [lock])
        assert check(SpawnPopen(), proc) is None and not calls  # not a fork start
        assert check(ForkPopen(), FORK.Process(target=print, args=(1,))) is None
        fresh = type("Fresh", (), {})()  # unknown to the table: the Python walk
        fresh.lock = lock
        assert check(ForkPopen(), FORK.Process(target=print, args=(fresh,))) is error
        assert calls.pop()[2] == [lock]
        assert check(ForkPopen(), object()) is None  # not a process object
    finally:
        mpsanitizer.disable()
