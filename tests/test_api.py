"""enable()/disable()/is_enabled(), modes, strictness, report data, fail-open."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import platform
import sys
import threading
import warnings
from multiprocessing import (
    popen_fork,
    popen_spawn_posix,
    reduction,
)

import mp_helpers as h
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError, ContextMixingWarning, handoff, walk

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
PATCHED = [*h.creation_constructors(), (reduction, "dump"), (popen_fork.Popen, "_launch")]


@pytest.fixture(autouse=True)
def always_off_after():
    yield
    mpsanitizer.disable()


def originals():
    return [vars(owner)[name] for owner, name in PATCHED]


ORIGINALS = originals()


def start(proc):
    proc.start()
    proc.join(60)
    return proc.exitcode


def test_enable_disable_is_enabled_and_exact_restore() -> None:
    before = originals()
    assert not mpsanitizer.is_enabled()
    mpsanitizer.enable()
    mpsanitizer.enable()  # idempotent
    assert mpsanitizer.is_enabled()
    assert all(a is not b for a, b in zip(originals(), before))
    mpsanitizer.disable()
    mpsanitizer.disable()
    assert not mpsanitizer.is_enabled()
    assert all(a is b for a, b in zip(originals(), before))


def test_enable_disable_cycles_do_not_grow_the_sanitizers_own_state() -> None:
    from mpsanitizer import stacks

    def cycles(n: int) -> None:
        for depth in [8, 3] * n:
            mpsanitizer.enable(stack_depth=depth)
            FORK.Lock()
            mpsanitizer.disable()

    cycles(1)  # the frames of this test and both depths' capture functions, once
    before = (len(stacks._internal_modules), len(stacks._capturers))
    cycles(20)
    assert (len(stacks._internal_modules), len(stacks._capturers)) == before


def test_enable_again_replaces_the_settings() -> None:
    mpsanitizer.enable(mode="warn", stack_depth=3)
    assert mpsanitizer.settings() == mpsanitizer.Settings(mode="warn", stack_depth=3)
    mpsanitizer.enable(strict=True)
    assert mpsanitizer.settings() == mpsanitizer.Settings(strict=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "loud"},
        {"strict": "yes"},
        {"stack_depth": 0},
        {"stack_depth": "8"},
        {"stack_depth": True},
        {"stack_depth": 10_000},
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs) -> None:
    with pytest.raises(ValueError, match=r"^mpsanitizer: \w+ must be"):
        mpsanitizer.enable(**kwargs)
    assert not mpsanitizer.is_enabled()


def test_disable_brings_back_cpythons_own_behaviour() -> None:
    mpsanitizer.enable()
    lock = FORK.Lock()
    mpsanitizer.disable()
    proc = SPAWN.Process(target=h.touch, args=(lock,))
    if sys.version_info >= (3, 11, 5):
        with pytest.raises(RuntimeError, match="A SemLock created in a fork context") as info:
            proc.start()
        assert not isinstance(info.value, ContextMismatchError)
    else:
        assert start(proc) == -11


def test_all_offenders_of_one_start_in_one_report(no_children) -> None:
    mpsanitizer.enable()
    lock, queue, event = FORK.Lock(), FORK.Queue(), FORK.Event()
    proc = SPAWN.Process(target=h.noop, args=(lock, [queue, lock]), kwargs={"e": event})
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    found = [(f.object_type, f.path) for f in info.value.findings]
    assert found == [("Lock", "args[0]"), ("Queue", "args[1][0]"), ("Event", "kwargs['e']")]
    report = str(info.value)
    assert report.count("Object created at (most recent call last):") == 3
    assert report.splitlines()[-1].endswith("(+2 more)")
    # the process is left unstarted and inspectable
    assert proc.pid is None and proc.exitcode is None and not proc.is_alive()


def test_structured_finding_data() -> None:
    mpsanitizer.enable(stack_depth=2)
    queue = FORK.Queue()
    with pytest.raises(ContextMismatchError) as info:
        multiprocessing.get_context("forkserver").Process(target=h.touch, args=(queue,)).start()
    finding = info.value.findings[0]
    data = finding.as_dict()
    assert data["object_type"] == "Queue" and data["path"] == "args[0]"
    assert (data["origin_start_method"], data["target_start_method"]) == ("fork", "forkserver")
    assert data["severity"] == "error" and data["kind"] == "context-mismatch"
    assert len(data["created_at"]) == 2
    assert data["created_at"][-1]["function"] == "test_structured_finding_data"
    assert data["started_at"][-1]["function"] == "test_structured_finding_data"
    assert data["creator_pid"] == data["pid"]
    assert finding.process_class == "ForkServerProcess"
    # the report names forkserver, unlike CPython's own message
    assert "(start method 'forkserver')" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).findings == info.value.findings


def test_objects_created_before_enable_are_still_caught() -> None:
    lock = FORK.Lock()
    mpsanitizer.enable()
    with pytest.raises(ContextMismatchError) as info:
        SPAWN.Process(target=h.touch, args=(lock,)).start()
    assert info.value.findings[0].created_at == []
    assert "created before mpsanitizer was enabled" in str(info.value)


def test_warn_mode_reports_then_lets_cpython_behave(no_children) -> None:
    mpsanitizer.enable(mode="warn")
    lock, queue = FORK.Lock(), FORK.Queue()
    proc = SPAWN.Process(target=h.touch_init, args=(queue, lock))  # the child touches the lock
    with pytest.warns(ContextMixingWarning) as caught:
        if sys.version_info >= (3, 11, 5):
            with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
                proc.start()
        else:
            assert start(proc) == -11
    # Every offender, also those CPython's own check (at the first) kept the pickling from
    findings = [w.message.finding for w in caught]
    assert [(f.severity, f.path) for f in findings] == [("error", "args[0]"), ("error", "args[1]")]


def test_a_pool_replacing_its_workers_warns_once_at_the_users_line(mixing_warnings) -> None:
    mpsanitizer.enable()
    lock = SPAWN.Lock()
    before = len(handoff.seen_findings())
    line = sys._getframe().f_lineno + 1
    with FORK.Pool(1, initializer=h.noop, initargs=(lock,), maxtasksperchild=1) as pool:
        assert pool.map(abs, [-1, -2, -3], chunksize=1) == [1, 2, 3]  # three workers
    assert [(w.filename, w.lineno) for w in mixing_warnings] == [(__file__, line)]
    assert len(handoff.seen_findings()) == before + 1  # repeats are not recorded either


def test_strict_mode_makes_mixing_an_error(no_children) -> None:
    mpsanitizer.enable(strict=True)
    lock = SPAWN.Lock()
    with pytest.raises(ContextMismatchError) as info:
        FORK.Process(target=h.touch, args=(lock,)).start()
    assert info.value.findings[0].kind == "context-mixing"
    report = str(info.value)
    assert report.startswith("mpsanitizer: ERROR: context-mixing: 1 object handed to ForkProcess")
    assert "belongs to another context" in report and "cannot reach it" not in report
    assert f"CPython {platform.python_version()} accepts this hand-off" in report


def test_mixing_warning_obeys_warning_filters() -> None:
    mpsanitizer.enable()
    lock = SPAWN.Lock()
    for ctx in (FORK, multiprocessing.get_context("forkserver")):
        proc = ctx.Process(target=h.touch, args=(lock,))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ContextMixingWarning)
            with pytest.raises(ContextMixingWarning) as info:
                proc.start()
        assert proc._popen is None  # raised as our errors are: before the child
        files = [entry.frame.code.raw.co_filename for entry in info.traceback]
        checking = ("errors.py", "handoff.py", "patches.py")  # the check's own frames
        assert not [f for f in files if f.endswith(checking)], files
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", ContextMixingWarning)
        assert start(FORK.Process(target=h.touch, args=(lock,))) == 0
    # only ours: 3.12+ adds a DeprecationWarning for forking while threads run (xdist has some)
    assert [w for w in caught if issubclass(w.category, ContextMixingWarning)] == []


class SpawningPopen:
    """Enough of a spawn Popen for ForkingPickler to run outside a real start."""

    method = "spawn"
    DupFd = popen_spawn_posix._DupFd

    def duplicate_for_child(self, fd):
        return fd


def test_pickled_bytes_are_unchanged_by_the_scan() -> None:
    mpsanitizer.enable()
    lock, event, value = SPAWN.Lock(), SPAWN.Event(), SPAWN.Value("i", 1)
    proc = SPAWN.Process(target=h.noop, args=(lock, event, value, list(range(100))))
    multiprocessing.context.set_spawning_popen(SpawningPopen())
    try:
        plain, scanned = io.BytesIO(), io.BytesIO()
        reduction.ForkingPickler(plain).dump(proc)
        handoff.scanning_pickler(
            "multiprocessing", scanned, None, "spawn", False, "multiprocessing"
        ).dump(proc)
        assert scanned.getvalue() == plain.getvalue()
        data = io.BytesIO()
        reduction.dump(proc, data)
        assert b"mpsanitizer" not in data.getvalue()
    finally:
        multiprocessing.context.set_spawning_popen(None)


def test_a_forking_pickler_replaced_after_the_first_start_is_the_one_used(monkeypatch) -> None:
    mpsanitizer.enable()
    assert start(SPAWN.Process(target=h.noop)) == 0  # the checks are in place from here on
    seen = []

    class Recording(reduction.ForkingPickler):
        def persistent_id(self, obj):
            if obj == "marker":
                seen.append(obj)
            return None

    monkeypatch.setattr(reduction, "ForkingPickler", Recording)
    assert start(SPAWN.Process(target=h.noop, args=("marker",))) == 0
    assert seen == ["marker"]
    with pytest.raises(ContextMismatchError):
        SPAWN.Process(target=h.noop, args=("marker", FORK.Lock())).start()
    assert seen == ["marker", "marker"]


def test_internal_fault_fails_open(monkeypatch, capfd) -> None:
    mpsanitizer.enable()

    def broken(*args):
        raise LookupError("boom")

    monkeypatch.setattr(handoff, "judge", broken)
    lock = SPAWN.Lock()
    assert start(SPAWN.Process(target=h.touch, args=(lock,))) == 0
    assert start(FORK.Process(target=h.touch, args=(lock,))) == 0
    err = capfd.readouterr().err.splitlines()
    faults = [line for line in err if line.startswith("mpsanitizer: internal error")]
    assert len(faults) == 2 and "LookupError: boom" in faults[0]


def test_a_fault_making_the_report_hands_the_pickling_back_to_cpython(monkeypatch, capfd) -> None:
    """Offenders are pickled as 0 while the scan goes on; with no report to raise, the
    child must not get those zeros: CPython pickles the process itself, as without us."""
    mpsanitizer.enable()

    def broken(*args, **kwargs):
        raise LookupError("no paths today")

    monkeypatch.setattr(walk, "locate", broken)
    proc = SPAWN.Process(target=h.exit_3_on_ints, args=(FORK.Lock(), [FORK.Queue(), "tail"]))
    if sys.version_info >= (3, 11, 5):
        with pytest.raises(RuntimeError, match="A SemLock created in a fork context") as info:
            proc.start()
        assert not isinstance(info.value, ContextMismatchError)
    else:
        assert start(proc) == 0  # the real (broken) primitives, not zeros
    err = capfd.readouterr().err.splitlines()
    assert err[0] == (
        "mpsanitizer: internal error while building a report "
        "(LookupError: no paths today); continuing without this check"
    )


class Unseekable:
    """A file that can only be written to, as a pipe is."""

    def __init__(self) -> None:
        self.chunks: list = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def seekable(self) -> bool:
        return False


@pytest.mark.parametrize("offender", [False, True])
def test_a_file_that_cannot_be_rewound_gets_the_native_pickle(monkeypatch, offender) -> None:
    """Error mode pickles into a buffer then: copied when clean, thrown away when the
    report fails (and CPython pickles the process itself)."""
    lock = FORK.Lock() if offender else SPAWN.Lock()
    proc = SPAWN.Process(target=h.noop, args=(lock, list(range(10))))
    multiprocessing.context.set_spawning_popen(SpawningPopen())
    try:
        native = io.BytesIO()
        if offender and sys.version_info >= (3, 11, 5):
            with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
                reduction.ForkingPickler(native).dump(proc)
        else:
            reduction.ForkingPickler(native).dump(proc)
        mpsanitizer.enable()
        monkeypatch.setattr(walk, "locate", lambda *args: {}[0])  # every report fails
        if offender and sys.version_info >= (3, 11, 5):
            with pytest.raises(RuntimeError, match="A SemLock created in a fork context") as info:
                reduction.dump(proc, Unseekable())
            assert not isinstance(info.value, ContextMismatchError)
            return
        written = Unseekable()
        reduction.dump(proc, written)
        assert b"".join(written.chunks) == native.getvalue()
    finally:
        multiprocessing.context.set_spawning_popen(None)


def test_a_fault_preparing_the_start_checks_steps_aside_natively(monkeypatch, capfd) -> None:
    import wrapt

    def broken(*args, **kwargs):
        raise LookupError("no wrapper today")

    mpsanitizer.enable()
    monkeypatch.setattr(wrapt, "FunctionWrapper", broken)
    lock = FORK.Lock()
    assert start(FORK.Process(target=h.touch, args=(lock,))) == 0
    err = capfd.readouterr().err.splitlines()
    assert err == [
        "mpsanitizer: internal error while preparing the start checks "
        "(LookupError: no wrapper today); continuing without this check"
    ]
    assert not mpsanitizer.is_enabled()
    assert originals() == ORIGINALS


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_fault_beginning_a_starts_scan_lets_cpython_pickle_it(monkeypatch, capfd, method):
    def broken(*args, **kwargs):
        raise LookupError("no popen today")

    mpsanitizer.enable()
    monkeypatch.setattr(handoff, "_is_process", broken)
    ctx = multiprocessing.get_context(method)
    assert start(ctx.Process(target=h.touch, args=(ctx.Lock(),))) == 0
    err = [line for line in capfd.readouterr().err.splitlines() if "mpsanitizer" in line]
    assert err[0] == (
        "mpsanitizer: internal error while preparing the start check "
        "(LookupError: no popen today); continuing without this check"
    )


class Awkward:
    """An object whose inspection raises."""

    def __getattr__(self, name):
        raise RuntimeError("do not look at me")

    @property
    def __dict__(self):
        raise RuntimeError("no dict either")


class Watchful:
    """Counts every attribute lookup made on its instances."""

    lookups = 0

    def __init__(self) -> None:
        self.items = [[1], {"k": [2]}]

    def __getattribute__(self, name):
        type(self).lookups += 1
        return object.__getattribute__(self, name)


def counting_wrapper(owner, name, calls: list):
    """Wrap ``owner.name`` as profilers and tracing libraries do: call what was there."""
    saved = vars(owner)[name]

    def wrapper(*args, **kwargs):
        calls.append(name)
        return saved(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["dump", "_launch"])
def test_a_patch_put_over_ours_before_the_first_start_runs_once_and_we_still_check(
    monkeypatch, where
) -> None:
    owner = reduction if where == "dump" else popen_fork.Popen
    mpsanitizer.enable()  # the start-time interceptions are stand-ins until the first start
    calls: list = []
    wrapper = counting_wrapper(owner, where, calls)
    monkeypatch.setattr(owner, where, wrapper)
    if where == "dump":  # spawn pickles the preparation data and the process: two calls
        with pytest.raises(ContextMismatchError, match=r"Lock at args\[0\]"):
            SPAWN.Process(target=h.touch, args=(FORK.Lock(),)).start()
        assert calls == ["dump", "dump"]
    else:
        with pytest.warns(ContextMixingWarning, match=r"Lock at args\[0\]"):
            assert start(FORK.Process(target=h.touch, args=(SPAWN.Lock(),))) == 0
        assert calls == ["_launch"]
    mpsanitizer.disable()
    assert vars(owner)[where] is wrapper
    del calls[:]
    assert start(FORK.Process(target=h.noop)) == 0  # our stand-in now passes straight through
    assert calls == (["_launch"] if where == "_launch" else [])


def mixing_in(caught) -> list:
    return [w for w in caught if issubclass(w.category, ContextMixingWarning)]


def test_a_saved_stand_in_that_comes_back_later_passes_straight_through(monkeypatch) -> None:
    mpsanitizer.enable()
    lock = SPAWN.Lock()
    saved = vars(popen_fork.Popen)["_launch"]  # our stand-in, until the first start
    assert start(FORK.Process(target=h.noop)) == 0
    mpsanitizer.disable()
    monkeypatch.setattr(popen_fork.Popen, "_launch", saved)  # code restoring what it saved
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert start(FORK.Process(target=h.touch, args=(lock,))) == 0
    assert mixing_in(caught) == []
    mpsanitizer.enable()  # patches again, not behind the old stand-in
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert start(FORK.Process(target=h.touch, args=(lock,))) == 0
    assert len(mixing_in(caught)) == 1


def test_the_fork_check_runs_no_code_of_the_objects_it_inspects() -> None:
    mpsanitizer.enable()
    spawn_born = SPAWN.Lock()  # a primitive born outside fork: fork starts are checked
    watched = Watchful()
    Watchful.lookups = 0
    with pytest.warns(ContextMixingWarning, match=r"Lock at args\[1\]"):
        assert start(FORK.Process(target=h.noop, args=(watched, spawn_born))) == 0
    assert Watchful.lookups == 0


def test_the_fork_check_finds_a_primitive_beside_large_data() -> None:
    mpsanitizer.enable()
    rows = [[{"row": [i, str(i)], "tags": {"a", "b"}} for i in range(16)] for _ in range(16)]
    lock = SPAWN.Lock()  # behind hundreds of objects in walk order, but near the top
    with pytest.warns(ContextMixingWarning, match=r"Lock at kwargs\['lock'\]"):
        assert start(FORK.Process(target=h.noop, args=(rows,), kwargs={"lock": lock})) == 0


def test_awkward_and_deep_arguments_do_not_break_a_fork_start(capfd) -> None:
    mpsanitizer.enable()
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert start(FORK.Process(target=h.noop, args=(Awkward(), deep))) == 0
    assert capfd.readouterr().err == ""


def test_enable_disable_from_many_threads_while_others_create_primitives() -> None:
    before = originals()
    stop = threading.Event()
    errors = []

    def create():
        try:
            while not stop.is_set():
                FORK.Lock(), FORK.Queue(), SPAWN.Event()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def toggle():
        try:
            for _ in range(50):
                mpsanitizer.enable()
                mpsanitizer.disable()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    creators = [threading.Thread(target=create) for _ in range(3)]
    togglers = [threading.Thread(target=toggle) for _ in range(3)]
    for t in creators + togglers:
        t.start()
    for t in togglers:
        t.join()
    stop.set()
    for t in creators:
        t.join()
    assert errors == []
    assert not mpsanitizer.is_enabled()
    assert all(a is b for a, b in zip(originals(), before))
    mpsanitizer.enable()
    with pytest.raises(ContextMismatchError):
        SPAWN.Process(target=h.touch, args=(FORK.Lock(),)).start()


@pytest.mark.parametrize("after_a_start", [False, True])
def test_a_lock_pickled_outside_a_start_fails_with_cpythons_own_traceback(after_a_start) -> None:
    """Putting a Lock in a Queue is refused by CPython; no frame of ours joins its traceback."""
    import pickle
    import traceback

    mpsanitizer.enable()
    try:
        if after_a_start:
            assert start(FORK.Process(target=h.ping)) == 0
        with pytest.raises(RuntimeError, match="through inheritance") as info:
            pickle.dumps(FORK.Lock())
    finally:
        mpsanitizer.disable()
    files = [frame.filename for frame in traceback.extract_tb(info.tb)]
    assert not [name for name in files if "mpsanitizer" in name], files


@pytest.mark.parametrize("method", h.METHODS)
def test_a_childs_stacks_begin_at_its_target(method) -> None:
    """Not at how the process began: spawn_main and <string>, or under fork the parent's
    own stack, copied into the child."""
    mpsanitizer.enable()
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    assert start(ctx.Process(target=h.put_own_stack, args=(queue,))) == 0
    assert queue.get(timeout=30) == ["put_own_stack"]


def test_a_start_with_no_frame_of_the_program_says_so() -> None:
    """A library's thread starting the process (torch's parallel start does)."""
    from concurrent.futures import ThreadPoolExecutor

    mpsanitizer.enable()
    proc = SPAWN.Process(target=h.noop, args=(FORK.Lock(),))
    with ThreadPoolExecutor(1) as pool:
        error = pool.submit(proc.start).exception(timeout=30)
    assert isinstance(error, ContextMismatchError)
    assert error.findings[0].started_at == []
    assert "'SpawnProcess-" in str(error)
    assert "started with no frame of the program on the stack" in str(error)
    assert str(error).splitlines()[-1].endswith(" -> ?")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_start_with_nothing_to_report_resolves_no_stack(monkeypatch, method) -> None:
    """Stacks are formatted only when a report is made: not in every start."""
    from mpsanitizer import stacks

    mpsanitizer.enable()
    ctx = multiprocessing.get_context(method)
    lock, foreign = ctx.Lock(), SPAWN.Lock()  # a spawn record: fork starts are checked too
    resolved = []
    monkeypatch.setattr(stacks, "resolve", lambda raw: resolved.append(raw) or [])
    monkeypatch.setattr(stacks, "capture", lambda *a: resolved.append(a) or [])
    assert start(ctx.Process(target=h.touch, args=(lock,))) == 0
    assert resolved == []
    del foreign
