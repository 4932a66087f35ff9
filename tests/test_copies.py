"""The copies of multiprocessing, ``multiprocess`` (dill's) and ``billiard`` (celery's): their
own primitives, Process classes and spawning state, checked as the standard library's."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpsanitizer import ContextMismatchError

TESTS = Path(__file__).resolve().parent
KINDS = ["Lock", "RLock", "Semaphore", "Event", "Condition", "Queue", "Value"]


@pytest.fixture(params=["multiprocess", "billiard"])
def copy(request) -> Any:
    return pytest.importorskip(request.param)


def make(package: Any, kind: str, method: str) -> Any:
    ctx = package.get_context(method)
    return ctx.Value("i", 0) if kind == "Value" else getattr(ctx, kind)()


def native_exit(package_name: str, kind: str, method: str) -> str:
    """The same hand-off without the sanitizer, in a fresh interpreter: what happens."""
    script = f"""
import sys
import {package_name} as mp
from test_copies import make
import mp_helpers

if __name__ == "__main__":
    obj = make(mp, {kind!r}, "fork")
    proc = mp.get_context({method!r}).Process(target=mp_helpers.touch, args=(obj,))
    try:
        proc.start()
    except RuntimeError as exc:
        print("RuntimeError:", exc)
        sys.exit()
    proc.join(60)
    print("exit", proc.exitcode)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=TESTS, capture_output=True, text=True, timeout=120
    )
    return result.stdout.strip()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("kind", KINDS)
def test_fork_born_object_of_a_copy_is_an_error(copy, kind, method, sanitizer, no_children):
    obj = make(copy, kind, "fork")
    proc = copy.get_context(method).Process(target=print, args=(obj,))
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert proc._popen is None
    (finding,) = info.value.findings
    assert (finding.object_type, finding.path, finding.package) == (kind, "args[0]", copy.__name__)
    assert (finding.origin, finding.target) == ("fork", method)
    assert finding.created_at and finding.created_at[-1].filename == __file__
    assert f"ctx = {copy.__name__}.get_context('{method}')" in str(info.value)


@pytest.mark.parametrize("kind", ["Lock", "Queue"])
def test_that_hand_off_really_fails_without_the_sanitizer(copy, kind):
    outcome = native_exit(copy.__name__, kind, "spawn")
    assert outcome == "exit -11" or outcome.startswith(
        "RuntimeError: A SemLock created in a fork context"
    ), outcome


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_same_context_is_silent_and_the_child_uses_it(copy, method, sanitizer, mixing_warnings):
    ctx = copy.get_context(method)
    helpers = importlib.import_module("mp_helpers")
    lock = ctx.Lock()  # held here: these copies drop a lock only their pickle refers to
    proc = ctx.Process(target=helpers.touch, args=(lock,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert mixing_warnings == []


def test_spawn_object_of_a_copy_to_its_fork_child_warns(copy, sanitizer, mixing_warnings):
    lock = copy.get_context("spawn").Lock()
    proc = copy.get_context("fork").Process(target=print, args=(lock,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    (warning,) = mixing_warnings
    finding = warning.message.finding
    assert (finding.origin, finding.target, finding.package) == ("spawn", "fork", copy.__name__)


def test_a_standard_lock_in_a_copys_process_fails_as_it_does_natively(copy, sanitizer):
    """Only the standard library's own spawning state lets its SemLocks be pickled: the copy's
    start refuses them natively, and the sanitizer leaves that refusal alone."""
    import multiprocessing

    proc = copy.get_context("spawn").Process(target=print, args=(multiprocessing.Lock(),))
    with pytest.raises(RuntimeError, match="only be shared between processes through inheritance"):
        proc.start()


def test_a_copys_primitive_made_without_ctx_takes_that_copys_default_context(copy) -> None:
    """Direct construction with ctx=None: the copy's own default, not multiprocessing's."""
    script = f"""
import mpsanitizer, {copy.__name__} as mp
from {copy.__name__} import synchronize
import mp_helpers
if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    mpsanitizer.enable()
    lock = synchronize.Lock(ctx=None)
    proc = mp.get_context("spawn").Process(target=mp_helpers.touch, args=(lock,))
    proc.start()
    proc.join(60)
    print(lock._mpsanitizer_origin[0], proc.exitcode)
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], cwd=TESTS, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.stdout.split() == ["spawn", "0"], result.stderr
