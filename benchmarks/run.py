"""What mpsanitizer costs, measured against native multiprocessing in the same run.

    python benchmarks/run.py                  # full run (about 2 minutes on 2 cores)
    python benchmarks/run.py --quick          # fewer rounds (about 20 s)
    python benchmarks/run.py --rounds 60      # the same number of rounds for every section
    python benchmarks/run.py --json out.json  # also write every raw sample
    python benchmarks/run.py --only creation,check

Method: each row is measured in many rounds. A round measures native and then
sanitized (``mpsanitizer.enable()`` ... ``disable()``), or the other way round: the
order alternates from one round to the next, so drift (CPU frequency, page cache,
other load) hits both sides alike. Tables show the median of each side, the median of
the per-round differences (delta) and the median of the per-round ratios, with the
interquartile range of those ratios. Fast operations are timed in inner loops of
hundreds or thousands of calls per round, with the garbage collector off.

The sanitizer is only ever enabled in this (parent) process; children are native,
except in section 4 (activation from the environment). Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from multiprocessing import context, reduction, spawn
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

# A user call site this many frames deep: stack capture keeps its full
# ``stack_depth`` (8) frames, as it would in a real application.
CALL_DEPTH = 16
BIG_LEN = 100_000
SMALL_ARGS = (1, "x", {"a": 2})
DEFAULT_DEPTH = 8  # mpsanitizer's default stack depth
SECTIONS = ("creation", "breakdown", "check", "pickling", "start", "activation")
ENV_SWITCH = "MPSANITIZE"


def child(*args: Any, **kwargs: Any) -> None:
    """Target of every started process; module level so spawn children can import it."""


def child_making_lock() -> None:
    """A child that creates one primitive: activation then imports wrapt and patches."""
    multiprocessing.Lock()


class Node:
    """A plain object with a few attributes: the walk visits it, pickling reduces it."""

    def __init__(self, i: int = 0) -> None:
        self.i = i
        self.name = "node"
        self.parent = None


def many_objects(lists: int, per_list: int) -> List[List[Node]]:
    """``lists`` lists of ``per_list`` Nodes: more than the fork walk's 256 visits."""
    return [[Node(i * per_list + j) for j in range(per_list)] for i in range(lists)]


class Wide:
    """One object with 100k attributes in its ``__dict__``."""

    def __init__(self, n: int) -> None:
        for i in range(n):
            setattr(self, f"a{i}", i)


# ---------------------------------------------------------------------------
# measurement


def _at_depth(depth: int, fn: Callable[[], Any]) -> Any:
    if depth <= 0:
        return fn()
    return _at_depth(depth - 1, fn)


def loop_timer(fn: Callable[[], Any], number: int) -> Callable[[], float]:
    """One sample: µs per call of ``fn`` over ``number`` calls, gc off, at CALL_DEPTH."""

    def run() -> float:
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            for _ in range(number):
                fn()
            t1 = time.perf_counter_ns()
        finally:
            gc.enable()
        return (t1 - t0) / number / 1000.0

    return lambda: _at_depth(CALL_DEPTH, run)


def after_fork_timer(
    fn: Callable[[], Any], number: int, faults: Optional[List[float]] = None
) -> Callable[[], float]:
    """One sample: µs per call of ``fn``, each call made right after forking (and reaping)
    a child, as in a program that starts fork children one after another: the first
    write to each page after a fork takes a copy-on-write fault, and caches are cold.
    Minor page faults per call are appended to ``faults``."""

    def run() -> float:
        total = 0
        flt = 0
        for _ in range(number):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter_ns()
            fn()
            total += time.perf_counter_ns() - t0
            flt += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        if faults is not None:
            faults.append(flt / number)
        return total / number / 1000.0

    return lambda: _at_depth(CALL_DEPTH, run)


class ForeignBorn:
    """Whether this process holds a primitive born outside fork (a spawn or forkserver
    context object): mpsanitizer skips the fork check until it does. Setting the
    tracker's count is what creating ``get_context('spawn').Lock()`` under the
    sanitizer does; ``None`` when the installed mpsanitizer has no such skip."""

    def __init__(self) -> None:
        from mpsanitizer import origins

        self.tracker = origins.tracker
        self.supported = hasattr(self.tracker, "foreign")

    @contextlib.contextmanager
    def state(self, present: bool) -> Iterator[None]:
        if not self.supported:
            yield
            return
        saved = self.tracker.foreign
        self.tracker.foreign = 1 if present else 0
        try:
            yield
        finally:
            self.tracker.foreign = saved


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


class Toggle:
    """Turns the sanitizer on for the sanitized half of a round."""

    def __init__(self, mpsanitizer: Any) -> None:
        self.mpsanitizer = mpsanitizer

    def on(self) -> None:
        from mpsanitizer import patches

        self.mpsanitizer.enable()
        # What a program pays at its first start after enable() (wrapt's wrappers made
        # and put in place) is paid once; rounds measure every later start.
        patches._start_checks()

    def off(self) -> None:
        self.mpsanitizer.disable()


class Paired:
    """Native and sanitized samples of one row, one pair per round."""

    def __init__(self, native: List[float], sanitized: List[float]) -> None:
        self.native = native
        self.sanitized = sanitized

    @property
    def deltas(self) -> List[float]:
        return [s - n for n, s in zip(self.native, self.sanitized)]

    @property
    def ratios(self) -> List[float]:
        return [s / n for n, s in zip(self.native, self.sanitized) if n > 0]


def interleaved(
    rounds: int,
    native: Callable[[], float],
    sanitized: Callable[[], float],
    toggle: Optional[Any],
) -> Paired:
    """``rounds`` rounds; even rounds native first, odd rounds sanitized first.
    ``toggle`` (``on()``/``off()``, e.g. :class:`Toggle`) brackets each sanitized sample."""
    nat: List[float] = []
    san: List[float] = []
    for r in range(rounds):
        for sanitize in (False, True) if r % 2 == 0 else (True, False):
            if not sanitize:
                nat.append(native())
                continue
            if toggle is not None:
                toggle.on()
            try:
                san.append(sanitized())
            finally:
                if toggle is not None:
                    toggle.off()
    return Paired(nat, san)


def single(rounds: int, fn: Callable[[], float]) -> List[float]:
    return [fn() for _ in range(rounds)]


def quartiles(data: Sequence[float]) -> Tuple[float, float, float]:
    if len(data) < 2:
        value = data[0] if data else float("nan")
        return value, value, value
    q1, q2, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return q1, q2, q3


# ---------------------------------------------------------------------------
# rows and formatting


class Budget:
    """``kind``: ``delta`` (µs added per call), ``value`` (µs of the check itself),
    ``ratio`` (sanitized / native)."""

    def __init__(self, kind: str, limit: float, label: str) -> None:
        self.kind = kind
        self.limit = limit
        self.label = label


class Row:
    def __init__(
        self,
        what: str,
        native: Optional[float],
        sanitized: Optional[float],
        delta: Optional[float],
        ratio: Optional[float],
        ratio_iqr: Optional[Tuple[float, float]] = None,
        budget: Optional[Budget] = None,
        samples: Optional[Dict[str, List[float]]] = None,
        note: str = "",
    ) -> None:
        self.what = what
        self.native = native
        self.sanitized = sanitized
        self.delta = delta
        self.ratio = ratio
        self.ratio_iqr = ratio_iqr
        self.budget = budget
        self.samples = samples or {}
        self.note = note

    @classmethod
    def paired(cls, what: str, p: Paired, budget: Optional[Budget] = None) -> Row:
        q1, _, q3 = quartiles(p.ratios)
        return cls(
            what,
            statistics.median(p.native),
            statistics.median(p.sanitized),
            statistics.median(p.deltas),
            statistics.median(p.ratios),
            (q1, q3),
            budget,
            {"native_us": p.native, "sanitized_us": p.sanitized},
        )

    @classmethod
    def alone(cls, what: str, samples: List[float], budget: Optional[Budget] = None) -> Row:
        value = statistics.median(samples)
        return cls(what, None, value, value, None, None, budget, {"sanitized_us": samples})

    def within(self) -> Optional[bool]:
        b = self.budget
        if b is None:
            return None
        if b.kind == "delta":
            return self.delta is not None and self.delta <= b.limit
        if b.kind == "value":
            return self.sanitized is not None and self.sanitized <= b.limit
        return self.ratio is not None and self.ratio <= b.limit

    def noise_limited(self) -> bool:
        """True when the ratios' interquartile range straddles a ratio budget's limit."""
        b = self.budget
        if b is None or b.kind != "ratio" or self.ratio_iqr is None:
            return False
        return self.ratio_iqr[0] <= b.limit <= self.ratio_iqr[1]

    def cells(self) -> List[str]:
        ratio = "—"
        if self.ratio is not None:
            ratio = f"{self.ratio:.4f}" if self.ratio < 2 else f"{self.ratio:.2f}"
            if self.ratio_iqr is not None:
                lo, hi = self.ratio_iqr
                ratio += f" (IQR {lo:.3f} to {hi:.3f})"
        within = self.within()
        verdict = "—" if within is None else ("yes" if within else "**no**")
        if within is not None and self.noise_limited():
            verdict += " †"
        return [
            self.what,
            fmt_time(self.native),
            fmt_time(self.sanitized),
            fmt_time(self.delta, signed=True),
            ratio,
            self.budget.label if self.budget else "—",
            verdict,
        ]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "what": self.what,
            "native_us": self.native,
            "sanitized_us": self.sanitized,
            "delta_us": self.delta,
            "ratio": self.ratio,
            "ratio_iqr": list(self.ratio_iqr) if self.ratio_iqr else None,
            "budget": (
                {"kind": self.budget.kind, "limit": self.budget.limit, "label": self.budget.label}
                if self.budget
                else None
            ),
            "within_budget": self.within(),
            "note": self.note,
            "samples": self.samples,
        }


def fmt_time(us: Optional[float], signed: bool = False) -> str:
    if us is None:
        return "—"
    sign = "+" if signed and us >= 0 else ""
    if abs(us) >= 1000:
        return f"{sign}{us / 1000:.2f} ms"
    if abs(us) >= 100:
        return f"{sign}{us:.0f} µs"
    if abs(us) >= 10:
        return f"{sign}{us:.1f} µs"
    return f"{sign}{us:.2f} µs"


HEADER = ["what", "native", "mpsanitizer", "delta", "ratio", "budget", "within budget"]


def markdown_table(rows: List[Row]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["--:"] * 4 + ["---", "---"]) + "|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


class Section:
    def __init__(self, key: str, title: str, rounds: int) -> None:
        self.key = key
        self.title = title
        self.rounds = rounds
        self.rounds_label = str(rounds)
        self.rows: List[Row] = []
        self.notes: List[str] = []
        self.seconds = 0.0

    def render(self) -> str:
        out = [
            f"### {self.title}",
            "",
            f"rounds: {self.rounds_label}",
        ]
        if self.rows:
            out += ["", markdown_table(self.rows)]
        if any(row.noise_limited() for row in self.rows):
            out += [
                "",
                "† the interquartile range of the per-round ratios straddles the budget: "
                "wall-time noise, not the sanitizer, decides this verdict.",
            ]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "title": self.title,
            "rounds": self.rounds_label,
            "seconds": self.seconds,
            "notes": self.notes,
            "rows": [row.as_dict() for row in self.rows],
        }


# ---------------------------------------------------------------------------
# 1. creation


def bench_creation(section: Section, toggle: Toggle, scale: float) -> None:
    ctx = multiprocessing.get_context("fork")
    budget = Budget("delta", 2.0, "≤ 2 µs added")
    cases = [
        ("fork `ctx.Lock()`", ctx.Lock, 1000),
        ("fork `ctx.Queue()`", ctx.Queue, 200),
        ("fork `ctx.JoinableQueue()`", ctx.JoinableQueue, 100),
        ("fork `ctx.Value('i', 0)`", lambda: ctx.Value("i", 0), 500),
    ]
    for what, make, number in cases:
        timer = loop_timer(make, max(10, int(number * scale)))
        timer()  # warm-up: first-use imports, heap arenas
        section.rows.append(
            Row.paired(what, interleaved(section.rounds, timer, timer, toggle), budget)
        )
    section.notes.append(
        "per object created and discarded (includes its destruction); "
        f"the call site is {CALL_DEPTH} frames deep so the creation stack is captured in full"
    )


# ---------------------------------------------------------------------------
# 1b. where the creation overhead goes


_FAKES = """
class FakeSemLock:
    def __init__(self, kind, value, maxvalue, *, ctx):
        self._semlock = None

class FakeLock(FakeSemLock):
    def __init__(self, *, ctx):
        FakeSemLock.__init__(self, 1, 1, 1, ctx=ctx)

class FakeQueue:
    def __init__(self, maxsize=0, *, ctx):
        self._rlock = FakeLock(ctx=ctx)
        self._wlock = FakeLock(ctx=ctx)
        self._sem = FakeLock(ctx=ctx)
"""


def _fake_classes(hooked: bool) -> Tuple[type, type]:
    """Classes with the call shape of ``SemLock``/``Lock``/``Queue`` and no system calls,
    with mpsanitizer's generated hooks on them (as ``enable()`` puts them on the real
    ones) when ``hooked``. Made in a module named under multiprocessing, so that their
    frames count as multiprocessing's, as the real classes' do."""
    from mpsanitizer import hooks

    namespace: Dict[str, Any] = {"__name__": "multiprocessing.benchmark_fakes"}
    exec(compile(_FAKES, "<benchmark fakes>", "exec"), namespace)
    fake_semlock, fake_lock, fake_queue = (
        namespace[name] for name in ("FakeSemLock", "FakeLock", "FakeQueue")
    )
    if hooked:
        fake_semlock.__init__ = hooks.semlock_hook(vars(fake_semlock)["__init__"])
        fake_queue.__init__ = hooks.composite_hook(vars(fake_queue)["__init__"])
    return fake_lock, fake_queue


class SwappedCapture:
    """The whole sanitizer with another record maker, for the sanitized half of a round:
    a constant (what the hooks cost without their stack), or the Python capture that
    runs where the C extension is not built."""

    def __init__(self, mpsanitizer: Any, python: bool) -> None:
        self.mpsanitizer = mpsanitizer
        self.python = python

    def on(self) -> None:
        from mpsanitizer import origins, stacks

        self.mpsanitizer.enable()
        if not self.python:
            origins.tracker.make = lambda skip, method: [method, 0, 0]
            return
        for composite in (False, True):
            serial = "~_next_serial()" if composite else "_next_serial()"
            made = stacks.capturer(
                DEFAULT_DEPTH,
                ("method", "_tracker.pid", serial),
                _tracker=origins.tracker,
                _next_serial=origins._next_serial,
            )
            setattr(origins.tracker, "make_composite" if composite else "make", made)

    def off(self) -> None:
        self.mpsanitizer.disable()


class ForwarderOnly:
    """Toggle for the floor of any hook in Python: on, ``SemLock.__init__`` is a function
    that only calls the original (no sanitizer)."""

    def __init__(self) -> None:
        from multiprocessing import synchronize

        self.owner = synchronize.SemLock
        self.original = vars(self.owner)["__init__"]

    def on(self) -> None:
        original = self.original

        def forward(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)

        self.owner.__init__ = forward  # type: ignore[method-assign]

    def off(self) -> None:
        self.owner.__init__ = self.original  # type: ignore[method-assign]


def _c_capture() -> bool:
    from mpsanitizer import extension

    return extension.get() is not None


def bench_breakdown(section: Section, toggle: Toggle, scale: float) -> None:
    import threading

    from mpsanitizer import origins, stacks

    ctx = multiprocessing.get_context("fork")
    number = max(100, int(5000 * scale))

    def pair(what: str, native: Callable[[], Any], sanitized: Callable[[], Any]) -> None:
        p = interleaved(
            section.rounds, loop_timer(native, number), loop_timer(sanitized, number), None
        )
        section.rows.append(Row.paired(what, p))

    def alone(what: str, fn: Callable[[], Any]) -> None:
        section.rows.append(Row.alone(what, single(section.rounds, loop_timer(fn, number))))

    real = loop_timer(ctx.Lock, max(10, int(1000 * scale)))
    real()
    section.rows.append(
        Row.paired(
            "real `ctx.Lock()`: the sanitizer with stack capture stubbed out",
            interleaved(section.rounds, real, real, SwappedCapture(toggle.mpsanitizer, False)),
        )
    )
    capture = "C" if _c_capture() else "Python (no C extension built)"
    section.rows.append(
        Row.paired(
            f"real `ctx.Lock()`: the whole sanitizer ({capture} capture)",
            interleaved(section.rounds, real, real, toggle),
        )
    )
    if _c_capture():
        section.rows.append(
            Row.paired(
                "real `ctx.Lock()`: the whole sanitizer, Python capture",
                interleaved(section.rounds, real, real, SwappedCapture(toggle.mpsanitizer, True)),
            )
        )
    for name in ("Queue", "JoinableQueue"):
        made = loop_timer(getattr(ctx, name), max(10, int(300 * scale)))
        made()
        section.rows.append(
            Row.paired(
                f"real `ctx.{name}()`: no sanitizer, a do-nothing forwarder on "
                "`SemLock.__init__` (the floor of any hook in Python)",
                interleaved(section.rounds, made, made, ForwarderOnly()),
            )
        )

    plain_lock, plain_queue = _fake_classes(hooked=False)
    hooked_lock, hooked_queue = _fake_classes(hooked=True)
    toggle.on()  # settings (stack depth) as enable() sets them
    try:
        pair("fake Lock: SemLock hook", lambda: plain_lock(ctx=ctx), lambda: hooked_lock(ctx=ctx))
        pair(
            "fake Queue (3 inner SemLocks): composite hook + 3 x SemLock hook",
            lambda: plain_queue(ctx=ctx),
            lambda: hooked_queue(ctx=ctx),
        )
        make = origins.tracker.make
        alone(
            f"part: the record (first user frame, {DEFAULT_DEPTH} frames, pid, serial; "
            f"{'C' if _c_capture() else 'Python'} capture)",
            lambda: make(0, "fork"),
        )
        bare = stacks.capturer(DEFAULT_DEPTH)
        alone(f"part: the stack alone, Python capture ({DEFAULT_DEPTH} frames)", lambda: bare(0))
        alone(
            "part: this thread's composite (`building.get(get_ident())`)",
            lambda: origins.building.get(threading.get_ident()),
        )
        alone("part: `ctx.get_start_method()`", ctx.get_start_method)
        lock = plain_lock(ctx=ctx)
        alone("part: `semlock._mpsanitizer_origin = origin`", lambda: setattr(lock, "_x", None))
    finally:
        toggle.off()
    section.notes.append(
        "real rows: the real `ctx.Lock()`; fake classes have the call shape of "
        "`SemLock`/`Lock`/`Queue` (the `SemLock.__init__` call goes through the class "
        "attribute, as `synchronize.Lock` does) but make no system call, so the hooks' "
        "cost is measured without `sem_open` noise"
    )
    section.notes.append(
        "real objects run: Lock 1 x SemLock hook (with the stack); Queue 1 x composite hook "
        "(with the stack) + 3 x SemLock hook; JoinableQueue 3 x composite hook (2 nested) + "
        "8 x SemLock hook; Value 1 x composite hook + 1 x SemLock hook"
    )


# ---------------------------------------------------------------------------
# 2. the fork start check in isolation


def _arg_sets() -> List[Tuple[str, tuple]]:
    return [
        ("small args", SMALL_ARGS),
        ("100k-element list", (list(range(BIG_LEN)),)),
        ("1024 plain objects", (many_objects(32, 32),)),
        ("10k plain objects", (many_objects(100, 100),)),
    ]


def fork_popen_stubs(checker: Any) -> Tuple[Any, Any]:
    """Two stand-ins for fork's ``Popen`` whose ``_launch`` does not fork: one plain, one
    with the hook enable() puts on ``popen_fork.Popen._launch``, calling ``checker``."""
    from mpsanitizer import forkwalk, hooks

    class ForkPopenStub:
        method = "fork"

        def _launch(self, process_obj: Any) -> None:
            return None

    class CheckedForkPopenStub(ForkPopenStub):
        pass

    CheckedForkPopenStub._launch = hooks.fork_launch_hook(  # type: ignore[method-assign]
        vars(ForkPopenStub)["_launch"], forkwalk.fork_check(checker.fork_found)
    )
    return ForkPopenStub(), CheckedForkPopenStub()


def _nothing_at_all() -> None:
    return None


def bench_check(section: Section, toggle: Toggle, scale: float) -> None:
    import mpsanitizer
    from mpsanitizer import forkwalk, handoff

    checker = handoff.Checker(mpsanitizer.Settings())
    ctx = multiprocessing.get_context("fork")
    plain, checked = fork_popen_stubs(checker)
    foreign = ForeignBorn()
    if foreign.supported:
        proc = ctx.Process(target=child, args=SMALL_ARGS)
        with foreign.state(False):
            p = interleaved(
                section.rounds,
                loop_timer(lambda: plain._launch(proc), 2000),
                loop_timer(lambda: checked._launch(proc), 2000),
                None,
            )
        row = Row.paired("fork `_launch` hook, no object born outside fork (check skipped)", p)
        row.ratio = row.ratio_iqr = None
        section.rows.append(row)
    check = forkwalk.fork_check(checker.fork_found)  # what the hook calls
    numbers = {
        "small args": 2000,
        "100k-element list": 1000,
        "1024 plain objects": 20,
        "10k plain objects": 20,
    }
    for label, args in _arg_sets():
        proc = ctx.Process(target=child, args=args)
        number = max(5, int(numbers[label] * scale))
        walk = loop_timer(lambda proc=proc: check(plain, proc), number)
        limit = 10.0 if label == "small args" else 50.0
        budget = Budget("value", limit, f"≤ {limit:.0f} µs")
        section.rows.append(
            Row.alone(
                f"fork check alone (`forkwalk`'s check), {label}",
                single(section.rounds, walk),
                budget,
            )
        )
        with foreign.state(True):
            p = interleaved(
                section.rounds,
                loop_timer(lambda proc=proc: plain._launch(proc), number),
                loop_timer(lambda proc=proc: checked._launch(proc), number),
                None,
            )
        row = Row.paired(f"fork `_launch` hook (with the check), {label}", p)
        row.ratio = row.ratio_iqr = None  # native is a no-op stub: a ratio means nothing
        section.rows.append(row)
        if label in ("small args", "100k-element list"):
            # Native: a do-nothing call made the same way, right after a fork; any call
            # then pays faults and cold caches, the check's share is the difference.
            faults: List[float] = []
            floor: List[float] = []
            cold = after_fork_timer(lambda proc=proc: check(plain, proc), 10, faults)
            nothing = after_fork_timer(_nothing_at_all, 10, floor)
            p = interleaved(section.rounds, nothing, cold, None)
            row = Row.paired(
                f"fork check alone, right after a previous fork, {label} "
                "(native: a do-nothing call, the same way)",
                p,
                Budget("delta", budget.limit, f"≤ {budget.limit:.0f} µs added"),
            )
            row.ratio = row.ratio_iqr = None
            row.note = (
                f"{statistics.median(faults):.0f} minor page faults per call, "
                f"{statistics.median(floor):.0f} for the do-nothing call"
            )
            row.samples["minor_faults"] = faults
            section.rows.append(row)
            section.notes.append(f"{row.what}: {row.note} (median)")
    wide = ctx.Process(target=child, args=(Wide(BIG_LEN),))
    first = loop_timer(lambda: check(plain, wide), 1)()
    first = min(first, loop_timer(lambda: check(plain, wide), 1)())
    # Inner loop of about 10 ms; fewer rounds when one call alone takes milliseconds.
    number = max(1, min(2000, int(10_000 / max(first, 0.01))))
    rounds = section.rounds if first < 1000 else max(3, section.rounds // 4)
    section.rows.append(
        Row.alone(
            "fork check alone, one object with 100k attributes",
            single(rounds, loop_timer(lambda: check(plain, wide), number)),
            Budget("value", 50.0, "≤ 50 µs"),
        )
    )
    section.notes.append(
        "the check alone has no native counterpart (fork pickles nothing); the `_launch` rows "
        "time the hook enable() installs on `popen_fork.Popen._launch` around a no-op "
        "stub against the bare stub, i.e. everything a fork start pays before `os.fork()`"
    )
    section.notes.append(
        "the per-argument `_launch` rows run as in a process that holds a primitive born "
        "outside fork (a spawn or forkserver context object), which is when mpsanitizer "
        "walks a fork child's arguments; until then it skips the walk (first `_launch` row)"
    )
    section.notes.append(
        "'right after a previous fork': each call follows a fork and reap of a child, as "
        "in a program that starts fork children one after another (copy-on-write faults, "
        "cold caches); mean of 10 such calls per round"
    )
    section.notes.append(
        f"the last row ran {rounds} rounds of {number} calls (the number adapts to the "
        "cost of one call): it shows whether the walk's bounds cover one object's "
        "attributes"
    )


# ---------------------------------------------------------------------------
# 2b. the spawn / forkserver pickling check in isolation


class _SpawningPopenStub:
    def __init__(self, method: str) -> None:
        self.method = method


def pickling_block(proc: Any, method: str) -> Callable[[], None]:
    """What ``popen_spawn_posix`` / ``popen_forkserver`` ``_launch`` pickle, in order."""
    popen = _SpawningPopenStub(method)
    prep = spawn.get_preparation_data(proc._name)

    def once() -> None:
        buf = io.BytesIO()
        context.set_spawning_popen(popen)
        try:
            reduction.dump(prep, buf)
            reduction.dump(proc, buf)
        finally:
            context.set_spawning_popen(None)

    return once


def bench_pickling(section: Section, toggle: Toggle, scale: float) -> None:
    numbers = {
        "small args": 1000,
        "100k-element list": 10,
        "1024 plain objects": 20,
        "10k plain objects": 3,
    }
    for method in ("spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        for label, args in _arg_sets():
            proc = ctx.Process(target=child, args=args)
            timer = loop_timer(pickling_block(proc, method), max(3, int(numbers[label] * scale)))
            timer()
            p = interleaved(section.rounds, timer, timer, toggle)
            section.rows.append(Row.paired(f"{method} start's pickling, {label}", p))
    section.notes.append(
        "`reduction.dump(prep_data)` then `reduction.dump(process)` into a fresh `BytesIO`, "
        "with a stub spawning popen set (`method` = spawn or forkserver), as `_launch` does; "
        "sanitized, the process object goes through the scanning pickler"
    )


# ---------------------------------------------------------------------------
# 3. start + join


class StartSampler:
    """start() + join() of one process, plus the parent-side time the sanitizer can touch.

    fork: the whole ``start()`` (the check runs before ``os.fork()``; ``start()`` returns
    right after it). spawn, forkserver: the ``reduction.dump(process)`` call made inside
    the real ``start()``, timed by a shim put around whatever ``reduction.dump`` is at
    that moment (the original, or mpsanitizer's wrapper). Their ``start()`` as a whole
    can block on the pipe until the child reads its payload, so it is no clean measure.
    """

    def __init__(self, ctx: Any, method: str, args: tuple) -> None:
        self.ctx = ctx
        self.method = method
        self.args = args
        self.parent: Dict[bool, List[float]] = {False: [], True: []}

    def sample(self, sanitized: bool) -> float:
        proc = self.ctx.Process(target=child, args=self.args)
        dumps: List[int] = []
        original = reduction.dump

        def shim(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(obj, multiprocessing.process.BaseProcess):
                return original(obj, *args, **kwargs)
            t0 = time.perf_counter_ns()
            try:
                return original(obj, *args, **kwargs)
            finally:
                dumps.append(time.perf_counter_ns() - t0)

        gc.collect()
        if self.method != "fork":
            reduction.dump = shim
        try:
            t0 = time.perf_counter_ns()
            proc.start()
            t1 = time.perf_counter_ns()
            proc.join()
            t2 = time.perf_counter_ns()
        finally:
            reduction.dump = original
        if proc.exitcode != 0:
            raise RuntimeError(f"benchmark child exited with {proc.exitcode}")
        parent = (t1 - t0) if self.method == "fork" else sum(dumps)
        self.parent[sanitized].append(parent / 1000.0)
        return (t2 - t0) / 1000.0


def bench_start(
    section: Section, parent_section: Section, toggle: Toggle, rounds: Dict[str, int]
) -> None:
    budget = Budget("ratio", 1.01, "≤ 1 %")
    walls: List[Row] = []
    parents: List[Row] = []
    derived: List[Row] = []
    foreign = ForeignBorn()
    runs: List[Tuple[str, Optional[bool]]] = [("fork", None)]
    if foreign.supported:
        runs = [("fork", False), ("fork", True)]
    runs += [("forkserver", None), ("spawn", None)]
    for method, born_outside in runs:
        ctx = multiprocessing.get_context(method)
        StartSampler(ctx, method, ()).sample(False)  # warm-up: forkserver, resource tracker
        suffix = ""
        arg_sets = _arg_sets()
        if born_outside is False:
            suffix = " [check skipped: nothing born outside fork]"
            arg_sets = [a for a in arg_sets if a[0] in ("small args", "10k plain objects")]
        elif born_outside:
            suffix = " [a spawn-context primitive exists: check runs]"
        for label, args in arg_sets:
            sampler = StartSampler(ctx, method, args)
            with foreign.state(bool(born_outside)) if born_outside is not None else _nothing():
                p = interleaved(
                    rounds[method],
                    lambda s=sampler: s.sample(False),
                    lambda s=sampler: s.sample(True),
                    toggle,
                )
            wall = Row.paired(
                f"{method} start+join, {label}{suffix}", p, budget if method != "fork" else None
            )
            walls.append(wall)
            if method == "fork":
                limit = 10.0 if label == "small args" else 50.0
                what = f"fork `start()` alone (parent side, check in situ), {label}{suffix}"
                parent_budget: Optional[Budget] = Budget("delta", limit, f"≤ {limit:.0f} µs added")
            else:
                what = f"{method} `reduction.dump(process)` inside `start()`, {label}"
                parent_budget = None
            parent = Row.paired(
                what, Paired(sampler.parent[False], sampler.parent[True]), parent_budget
            )
            parents.append(parent)
            if wall.native:
                derived.append(
                    Row(
                        f"{method}: parent-side delta ÷ native start+join, {label}{suffix}",
                        wall.native,
                        wall.native + parent.delta,
                        parent.delta,
                        1.0 + parent.delta / wall.native,
                        None,
                        budget if method != "fork" else None,
                    )
                )
    section.rows.extend(walls)
    parent_section.rows.extend(parents + derived)
    section.notes.append("one start+join per side per round; the child's target is a no-op")
    parent_section.notes.append(
        "parent side: fork, the whole `start()` (mpsanitizer's check runs in it, before "
        "`os.fork()`); spawn and forkserver, the pickling of the process object inside the "
        "real `start()`, which is where mpsanitizer's check runs (its only other work in "
        "those starts is passing the `prep_data` dump through its wrapper)"
    )
    if foreign.supported:
        parent_section.notes.append(
            "fork rows come in two states: before the process holds any primitive born "
            "outside fork (mpsanitizer skips the walk) and as once it does (set through "
            "mpsanitizer's own counter, which creating a spawn-context Lock increments)"
        )
    parent_section.notes.append(
        "the last rows divide the parent-side delta by the native start+join median: the "
        "overhead that wall time alone cannot resolve"
    )


# ---------------------------------------------------------------------------
# 4. activation from the environment (children)


def _env(on: bool) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_SWITCH}
    if on:
        env[ENV_SWITCH] = "1"
    return env


def bench_activation(section: Section, rounds: int) -> None:
    """The one case ``benchmarks/activation.py`` leaves out: an activated spawn child
    that creates a primitive, so that its lazy activation fires (imports wrapt, patches)."""
    import subprocess

    probe = subprocess.run(
        [sys.executable, "-c", "import sys; print('mpsanitizer.lazy' in sys.modules)"],
        env=_env(True),
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "True":
        section.notes.append(
            f"skipped: {ENV_SWITCH}=1 does not activate this interpreter (mpsanitizer is not "
            "installed with its .pth file)"
        )
        return
    ctx = multiprocessing.get_context("spawn")

    def spawn_start(on: bool) -> Callable[[], float]:
        def once() -> float:
            saved = os.environ.get(ENV_SWITCH)
            if on:
                os.environ[ENV_SWITCH] = "1"
            try:
                proc = ctx.Process(target=child_making_lock)
                gc.collect()
                t0 = time.perf_counter_ns()
                proc.start()
                proc.join()
                t1 = time.perf_counter_ns()
            finally:
                if saved is None:
                    os.environ.pop(ENV_SWITCH, None)
                else:
                    os.environ[ENV_SWITCH] = saved
            if proc.exitcode != 0:
                raise RuntimeError(f"benchmark child exited with {proc.exitcode}")
            return (t1 - t0) / 1000.0

        return once

    spawn_start(False)()
    p = interleaved(rounds, spawn_start(False), spawn_start(True), None)
    section.rows.append(
        Row.paired("spawn start+join, activated child creates one Lock (activation fires)", p)
    )
    section.notes.append(
        f"native: {ENV_SWITCH} unset; mpsanitizer: {ENV_SWITCH}=1 in the child's environment "
        "(the `.pth` line arms it at interpreter start, the Lock fires it); this process "
        "stays native on both sides. Children that never create a primitive or start a "
        "process: `python benchmarks/activation.py`"
    )


# ---------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (< 30 s)")
    parser.add_argument("--rounds", type=int, help="rounds for every section")
    parser.add_argument("--json", metavar="PATH", help="write results and raw samples here")
    parser.add_argument(
        "--only", metavar="LIST", help=f"comma-separated sections out of {','.join(SECTIONS)}"
    )
    opts = parser.parse_args(argv)
    only = set(opts.only.split(",")) if opts.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if opts.rounds is not None and opts.rounds < 2:
        parser.error("--rounds must be at least 2")

    # Children must be native unless a row says otherwise.
    switch = os.environ.pop(ENV_SWITCH, None)

    try:
        import mpsanitizer
    except ImportError:  # run from a checkout that is not installed: use the checkout
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import mpsanitizer

    if mpsanitizer.is_enabled():
        mpsanitizer.disable()
    toggle = Toggle(mpsanitizer)
    scale = 0.5 if opts.quick else 1.0
    micro = 10 if opts.quick else 40
    starts = (
        {"fork": 16, "forkserver": 8, "spawn": 6}
        if opts.quick
        else {"fork": 100, "forkserver": 60, "spawn": 40}
    )
    if opts.rounds is not None:
        micro = opts.rounds
        starts = dict.fromkeys(starts, opts.rounds)

    import wrapt

    env = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mpsanitizer": mpsanitizer.__version__,
        "wrapt": getattr(wrapt, "__version__", "?"),
        "c_capture": _c_capture(),
        "quick": opts.quick,
    }
    print(f"# mpsanitizer benchmark: Python {env['python']}\n")
    print(
        f"Python {sys.version.split()[0]} ({env['implementation']}), {env['platform']}, "
        f"{env['cpus']} CPUs, mpsanitizer {env['mpsanitizer']}, wrapt {env['wrapt']}, "
        f"C capture {'built' if env['c_capture'] else 'not built'}"
        + (", --quick" if opts.quick else "")
    )
    if switch is not None:
        print(f"({ENV_SWITCH}={switch} was removed from the environment for this run)")
    print(
        "native/mpsanitizer: medians; delta: median of per-round differences; "
        "ratio: median of per-round ratios (interquartile range)\n"
    )
    sys.stdout.flush()

    started = time.perf_counter()
    sections: List[Section] = []
    steps: List[Tuple[str, str, int, Callable[[Section], None]]] = [
        (
            "creation",
            "1. Creation (µs per object)",
            micro,
            lambda s: bench_creation(s, toggle, scale),
        ),
        (
            "breakdown",
            "1b. Where the creation overhead goes (µs per call)",
            micro,
            lambda s: bench_breakdown(s, toggle, scale),
        ),
        (
            "check",
            "2. Fork start check in isolation (µs per start)",
            micro,
            lambda s: bench_check(s, toggle, scale),
        ),
        (
            "pickling",
            "2b. Spawn / forkserver pickling check in isolation (µs per start)",
            micro,
            lambda s: bench_pickling(s, toggle, scale),
        ),
    ]
    for key, title, rounds, run in steps:
        if key not in only:
            continue
        section = Section(key, title, rounds)
        t0 = time.perf_counter()
        run(section)
        section.seconds = time.perf_counter() - t0
        sections.append(section)
        print(section.render() + "\n")
        sys.stdout.flush()
    if "start" in only:
        section = Section("start", "3. start() + join() wall time", max(starts.values()))
        parent = Section(
            "start_parent",
            "3b. The parent's share of those starts, where mpsanitizer works (same rounds)",
            max(starts.values()),
        )
        t0 = time.perf_counter()
        bench_start(section, parent, toggle, starts)
        section.seconds = time.perf_counter() - t0
        for s in (section, parent):
            s.rounds_label = ", ".join(f"{m} {n}" for m, n in starts.items())
            sections.append(s)
            print(s.render() + "\n")
    if "activation" in only:
        section = Section(
            "activation",
            "4. Activation from the environment, when it fires in a spawn child",
            starts["spawn"],
        )
        t0 = time.perf_counter()
        bench_activation(section, starts["spawn"])
        section.seconds = time.perf_counter() - t0
        sections.append(section)
        print(section.render() + "\n")
    total = time.perf_counter() - started
    print(
        f"total {total:.0f} s ("
        + ", ".join(f"{s.key} {s.seconds:.0f} s" for s in sections if s.key != "start_parent")
        + ")"
    )
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "environment": env,
                    "seconds": total,
                    "sections": {s.key: s.as_dict() for s in sections},
                },
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
