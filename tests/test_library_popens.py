"""Processes started by a library's own Popen, which pickles them its own way (loky's,
through cloudpickle): every pickler ends in ``SemLock.__getstate__``, and so does the
check."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, List

import mp_helpers as h
import own_popen
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError

NATIVE_CHECK = h.NATIVE_CHECK


def own_process(obj: Any, *more: Any) -> own_popen.OwnProcess:
    return own_popen.OwnProcess(target=h.touch, args=(obj, *more))


@pytest.mark.parametrize("kind", list(h.MAKERS))
def test_fork_born_object_is_an_error_before_the_child_exists(kind: str, sanitizer: None) -> None:
    obj = h.MAKERS[kind](multiprocessing.get_context("fork"))
    proc = own_process(obj)
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    assert proc._popen is None and multiprocessing.active_children() == []
    (finding,) = info.value.findings
    assert (finding.object_type, finding.path) == (kind, "args[0]")
    assert (finding.origin, finding.target) == ("fork", own_popen.METHOD)
    assert (finding.process_class, finding.via) == ("OwnProcess", "Process")
    assert finding.created_at[-1].function == "<lambda>"  # the MAKERS line, in mp_helpers
    assert finding.started_at[-1].filename == __file__  # this test, not the Popen or pickler
    report = str(info.value)
    assert "(start method 'ownstart')" in report
    assert "ctx = multiprocessing.get_context('spawn'); ctx." in report


@pytest.mark.parametrize("kind", ["Lock", "Queue", "Value"])
def test_native_run_of_that_hand_off_really_fails(kind: str) -> None:
    obj = h.MAKERS[kind](multiprocessing.get_context("fork"))
    if NATIVE_CHECK:
        with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
            own_process(obj).start()
    else:
        assert h.exit_code(own_process(obj)) == -11


def test_every_offender_of_the_start_in_one_report(sanitizer: None) -> None:
    fork = multiprocessing.get_context("fork")
    lock, queue = fork.Lock(), fork.Queue()
    spawn_lock = multiprocessing.get_context("spawn").Lock()
    proc = own_popen.OwnProcess(target=h.touch, args=(spawn_lock,), kwargs={"q": queue, "l": lock})
    with pytest.raises(ContextMismatchError) as info:
        proc.start()
    found = sorted((f.object_type, f.path) for f in info.value.findings)
    assert found == [("Lock", "kwargs['l']"), ("Queue", "kwargs['q']")]


@pytest.mark.parametrize("kind", ["Lock", "Queue", "Event"])
def test_spawn_born_object_is_silent_and_the_child_uses_it(kind: str, sanitizer: None) -> None:
    obj = h.MAKERS[kind](multiprocessing.get_context("spawn"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h.exit_code(own_process(obj)) == 0


def test_warn_mode_warns_then_lets_cpython_decide(mixing_warnings: List) -> None:
    mpsanitizer.enable(mode="warn")
    try:
        lock = multiprocessing.get_context("fork").Lock()
        proc = own_process(lock)
        if NATIVE_CHECK:
            with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
                proc.start()
        else:
            assert h.exit_code(proc) == -11
    finally:
        mpsanitizer.disable()
    (warning,) = mixing_warnings
    assert warning.message.finding.kind == "context-mismatch"
    assert warning.message.finding.target == own_popen.METHOD


LOKY = """
import multiprocessing, mpsanitizer
from joblib.externals.loky import get_reusable_executor
import mp_helpers as h
mpsanitizer.enable()
def main():
    lock = multiprocessing.get_context("fork").Lock()
    def init():  # pickled by value, with its closure, by cloudpickle
        h.touch(lock)
    executor = get_reusable_executor(max_workers=1, {how})
    try:
        executor.submit(h.ping).result(60)
    except mpsanitizer.ContextMismatchError as error:
        (f,) = error.findings
        print(f.object_type, f.path, f.target, f.via, f.started_at[-1].lineno, sep="|")
main()
"""


@pytest.mark.parametrize(
    ("how", "path"),
    [
        ("initializer=h.touch_init, initargs=(None, lock)", "initargs[1]"),
        ("initializer=init", "initializer.<closure lock>"),
    ],
)
def test_loky_executor(how: str, path: str) -> None:
    """joblib's loky: its own Popen, its own pickler, its own start method name."""
    pytest.importorskip("joblib")
    tests = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-c", LOKY.format(how=how)], capture_output=True, text=True,
        timeout=120, cwd=tests,
    )  # fmt: skip
    assert result.stdout.strip().split("|") == ["Lock", path, "loky", "loky", "12"], result.stderr


WRAPPING_LIBRARY = """
import functools, multiprocessing
def run_in_spawn(fn):
    @functools.wraps(fn)  # copies __module__: on 3.12+ the frame's module name says the user's
    def wrapper(*args):
        proc = multiprocessing.get_context("spawn").Process(target=fn, args=args)
        proc.start()
        proc.join()
    return wrapper
"""


def test_a_library_wrapper_made_with_functools_wraps_is_not_the_users_frame(tmp_path) -> None:
    """pebble's ``concurrent.process`` shape: the start site is the user's call."""
    package = tmp_path / "joblib"  # a package that counts as a process library
    package.mkdir()
    (package / "__init__.py").write_text(WRAPPING_LIBRARY)
    (tmp_path / "app.py").write_text(
        "import multiprocessing, joblib\n"
        "def work(lock):\n    pass\n"
        "if __name__ == '__main__':\n"
        "    lock = multiprocessing.get_context('fork').Lock()\n"
        "    joblib.run_in_spawn(work)(lock)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mpsanitizer", "app.py"], cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert "SUMMARY: mpsanitizer: context-mismatch app.py:5 -> app.py:6" in result.stderr
