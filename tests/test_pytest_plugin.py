"""The pytest plugin, exercised in real pytest subprocesses through ``pytester``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HELPERS = """
import multiprocessing

def touch(lock):
    with lock:
        pass
"""

TESTS = """
import concurrent.futures, multiprocessing, threading
import pytest
from helpers import touch

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")

def test_clean():
    p = SPAWN.Process(target=touch, args=(SPAWN.Lock(),)); p.start(); p.join()

def test_swallowed():
    try:
        SPAWN.Process(target=touch, args=(FORK.Lock(),)).start()
    except Exception:
        pass

def test_in_thread():
    lock = FORK.Lock()
    t = threading.Thread(target=lambda: SPAWN.Process(target=touch, args=(lock,)).start())
    t.start(); t.join()

def start_nested(method):
    lock = multiprocessing.get_context("fork").Lock()
    try:
        multiprocessing.get_context(method).Process(target=touch, args=(lock,)).start()
    except Exception:
        pass

def test_in_child():
    p = SPAWN.Process(target=start_nested, args=("forkserver",)); p.start(); p.join()

def bad_initializer():
    lock = multiprocessing.get_context("fork").Lock()
    multiprocessing.get_context("spawn").Process(target=touch, args=(lock,)).start()

def test_broken_pool():
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=SPAWN, initializer=bad_initializer
    ) as executor:
        try:
            executor.submit(int).result(timeout=60)
        except concurrent.futures.process.BrokenProcessPool:
            pass

def test_warning_goes_to_the_summary():
    p = FORK.Process(target=touch, args=(SPAWN.Lock(),)); p.start(); p.join()

@pytest.mark.no_mpsanitize
def test_marked_off():
    try:
        SPAWN.Process(target=touch, args=(FORK.Lock(),)).start()
    except RuntimeError:
        pass  # CPython's own check on 3.11.5+; a SIGSEGV'd child before

def test_expected(mpsanitizer_findings):
    with pytest.raises(RuntimeError):
        SPAWN.Process(target=touch, args=(FORK.Lock(),)).start()
    assert mpsanitizer_findings.kinds() == ["context-mismatch"]
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(helpers=HELPERS, test_suite=TESTS)
    pytester.syspathinsert()
    return pytester


def outcomes(result: pytest.RunResult) -> dict:
    found = {}
    for line in result.outlines:
        for word in ("PASSED", "FAILED"):
            if line.startswith("test_suite.py::") and f" {word}" in line:
                found[line.split("::")[1].split()[0]] = word
    return found


def test_idle_unless_asked(suite: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    result = suite.runpytest_subprocess("-v", "-k", "clean or swallowed or in_thread")
    assert "mpsanitizer: off" in result.outlines
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("how", ["cli", "env", "ini"])
def test_findings_fail_the_test_wherever_they_happen(suite, monkeypatch, how) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    args = ["-v", "-p", "no:cacheprovider"]
    if how == "cli":
        args.append("--mpsanitize")
    elif how == "env":
        monkeypatch.setenv("MPSANITIZE", "1")
    else:
        suite.makeini("[pytest]\nmpsanitize = error\n")
    result = suite.runpytest_subprocess(*args)
    assert outcomes(result) == {
        "test_clean": "PASSED",
        "test_swallowed": "FAILED",
        "test_in_thread": "FAILED",
        "test_in_child": "FAILED",
        "test_broken_pool": "FAILED",
        "test_warning_goes_to_the_summary": "PASSED",
        "test_marked_off": "PASSED",
        "test_expected": "PASSED",
    }, result.stdout.str()
    text = result.stdout.str()
    assert "mpsanitizer: mode=error strict=False stack_depth=8" in text
    assert "SUMMARY: mpsanitizer: context-mismatch" in text
    assert "ContextMixingWarning" in text  # the warnings summary
    assert "(start method 'forkserver') cannot reach it" in text  # from the child


def test_command_line_beats_environment(suite, monkeypatch) -> None:
    monkeypatch.setenv("MPSANITIZE", "1")
    result = suite.runpytest_subprocess("--mpsanitize=off", "-k", "swallowed")
    assert "mpsanitizer: off" in result.outlines
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("value", [None, "warn"])
def test_a_test_path_after_the_bare_option_stays_a_test_path(suite, monkeypatch, value) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    option = ["--mpsanitize"] + ([value] if value else [])
    result = suite.runpytest_subprocess(*option, "test_suite.py", "-k", "swallowed")
    on = f"mpsanitizer: mode={value or 'error'} strict=False stack_depth=8 (from --mpsanitize)"
    assert on in result.outlines
    result.assert_outcomes(failed=1)  # test_suite.py ran, and its finding fails the test


ERROR_TYPE = """
import multiprocessing
from helpers import touch

def test_error_type():
    fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
    try:
        spawn.Process(target=touch, args=(fork.Lock(),)).start()
    except Exception as exc:
        print("raised", type(exc).__module__, type(exc).__name__)
"""


def test_off_on_the_command_line_also_disarms_what_the_environment_armed(
    suite, monkeypatch
) -> None:
    suite.makepyfile(test_error_type=ERROR_TYPE)
    monkeypatch.setenv("MPSANITIZE", "1")
    armed = suite.runpytest_subprocess("-s", "-p", "no:mpsanitizer", "test_error_type.py")
    assert "raised mpsanitizer ContextMismatchError" in armed.stdout.str()  # armed at startup
    result = suite.runpytest_subprocess("-s", "--mpsanitize=off", "test_error_type.py")
    assert "mpsanitizer: off" in result.outlines
    assert "raised mpsanitizer" not in result.stdout.str()


FIXTURE_AND_MARKER = """
import multiprocessing as mp, pytest

def init(lock):
    pass

@pytest.fixture(scope="module")
def bad_pool():
    lock = mp.get_context("fork").Lock()
    with mp.get_context("spawn").Pool(1, initializer=init, initargs=(lock,)) as pool:
        yield pool

def test_a(bad_pool):
    pass

def test_b(bad_pool):
    pass

def test_c_unread(mpsanitizer_findings):
    lock = mp.get_context("fork").Lock()
    with pytest.raises(RuntimeError):
        mp.get_context("spawn").Process(target=init, args=(lock,)).start()

@pytest.mark.no_mpsanitize
def test_d_exempt():
    pass
"""


def test_a_finding_is_reported_once_and_only_for_its_own_test(suite, monkeypatch) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    suite.makepyfile(test_once=FIXTURE_AND_MARKER)
    result = suite.runpytest_subprocess(
        "-rA", "--mpsanitize", "-p", "no:cacheprovider", "test_once.py"
    )
    result.assert_outcomes(passed=2, errors=2)  # the fixture's setup fails test_a and test_b
    text = result.stdout.str()
    assert "PASSED test_once.py::test_c_unread" in text
    assert "PASSED test_once.py::test_d_exempt" in text
    assert "finding(s) during this test" not in text


def test_bad_values_are_one_clear_error(suite, monkeypatch) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    result = suite.runpytest_subprocess("--mpsanitize=loud")
    assert result.ret != 0
    assert "--mpsanitize='loud' is not understood" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_works_under_xdist(suite, monkeypatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.delenv("MPSANITIZE", raising=False)
    result = suite.runpytest_subprocess("-n", "2", "--mpsanitize", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=4)
    text = result.stdout.str()
    for name in ("test_swallowed", "test_in_thread", "test_in_child", "test_broken_pool"):
        assert f"FAILED test_suite.py::{name}" in text


CHILD_MIXES = """
import multiprocessing
from helpers import touch

def child():
    lock = multiprocessing.get_context("spawn").Lock()
    p = multiprocessing.get_context("fork").Process(target=touch, args=(lock,))
    p.start(); p.join()

def test_child_mixes():
    p = multiprocessing.get_context("spawn").Process(target=child); p.start(); p.join()

def test_next():
    pass
"""


@pytest.mark.parametrize("flag", ["error", "error::mpsanitizer.ContextMixingWarning"])
def test_a_childs_warning_made_an_error_by_w_fails_its_test_not_the_session(
    suite, monkeypatch, flag
) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    suite.makepyfile(test_child=CHILD_MIXES)
    result = suite.runpytest_subprocess("-v", "--mpsanitize=warn", "-W", flag, "test_child.py")
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text
    result.assert_outcomes(passed=1, failed=1)
    assert "ContextMixingWarning: mpsanitizer: WARNING: context-mixing" in text


def test_without_pytests_warnings_plugin_a_childs_warning_stays_in_its_test(
    suite, monkeypatch
) -> None:
    """Not printed in the middle of the progress line: the child's stderr has it."""
    monkeypatch.delenv("MPSANITIZE", raising=False)
    suite.makepyfile(test_child=CHILD_MIXES)
    result = suite.runpytest_subprocess(
        "-q", "--mpsanitize=warn", "-p", "no:warnings", "test_child.py"
    )
    result.assert_outcomes(passed=2)
    assert "ContextMixingWarning" not in result.stdout.str() + result.stderr.str()


UNCAUGHT = """
import multiprocessing
from helpers import touch

def test_uncaught():
    lock = multiprocessing.get_context("fork").Lock()
    multiprocessing.get_context("spawn").Process(target=touch, args=(lock,)).start()
"""


def _on_ci(monkeypatch, on_ci: bool) -> None:
    """The environment pytest reads as CI's (``CI`` or ``BUILD_NUMBER`` set), or not."""
    monkeypatch.delenv("MPSANITIZE", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    if on_ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)


@pytest.mark.parametrize("on_ci", [False, True], ids=["local", "on-ci"])
def test_a_failing_tests_own_report_is_shown_once_and_its_stacks_end_at_the_test(
    suite, monkeypatch, on_ci
) -> None:
    # on CI (CI or BUILD_NUMBER set) pytest's short summary prints whole crash messages
    _on_ci(monkeypatch, on_ci)
    suite.makepyfile(test_uncaught=UNCAUGHT)
    result = suite.runpytest_subprocess("--mpsanitize", "test_uncaught.py")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert text.count("SUMMARY: mpsanitizer: context-mismatch") == 1, text
    if on_ci:  # the short summary names the finding by its headline alone
        failed = next(line for line in text.splitlines() if line.startswith("FAILED "))
        assert failed.endswith("cannot reach it"), failed
    created = text[text.index("Object created at") :].splitlines()[1:3]
    assert "test_uncaught.py" in created[0] and "lock = " in created[1], created
    assert "_pytest" not in text[text.index("Object created at") :], text


SWALLOWED = """
import multiprocessing
from helpers import touch

def test_swallows():
    lock = multiprocessing.get_context("fork").Lock()
    try:
        multiprocessing.get_context("spawn").Process(target=touch, args=(lock,)).start()
    except RuntimeError:
        pass
"""


@pytest.mark.parametrize("on_ci", [False, True], ids=["local", "on-ci"])
def test_a_swallowed_finding_fails_its_test_under_a_one_line_headline(
    suite, monkeypatch, on_ci
) -> None:
    _on_ci(monkeypatch, on_ci)
    suite.makepyfile(test_swallowed_here=SWALLOWED)
    result = suite.runpytest_subprocess("--mpsanitize", "test_swallowed_here.py")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert text.count("SUMMARY: mpsanitizer: context-mismatch") == 1, text  # its report, once
    failed = next(line for line in text.splitlines() if line.startswith("FAILED "))
    whole = (
        "FAILED test_swallowed_here.py::test_swallows - mpsanitizer: 1 finding(s) during this "
        "test: context-mismatch test_swallowed_here.py:5 -> test_swallowed_here.py:7"
    )
    if on_ci:
        assert failed == whole, text
    else:  # cut to the terminal's width, as pytest cuts any reason
        assert failed.endswith("...") and whole.startswith(failed[:-3]), text
        assert len(failed) > len("FAILED test_swallowed_here.py::test_swallows - mps"), text
    after = text[text.index(failed) :].splitlines()[1:]
    assert not after or after[0].startswith("="), text  # nothing more of it under the line


AT_IMPORT = """
import multiprocessing
from helpers import touch

lock = multiprocessing.get_context("fork").Lock()
try:  # the module's top level, run while pytest collects it
    multiprocessing.get_context("spawn").Process(target=touch, args=(lock,)).start()
except RuntimeError:
    pass

def test_here():
    pass
"""


def test_a_finding_while_a_module_is_collected_is_its_collection_error(suite) -> None:
    suite.makepyfile(test_at_import=AT_IMPORT)
    result = suite.runpytest_subprocess("--mpsanitize", "test_at_import.py")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    text = result.stdout.str()
    assert "ERROR collecting test_at_import.py" in text
    assert "mpsanitizer: 1 finding(s) while collecting: context-mismatch" in text
    assert "SUMMARY: mpsanitizer: context-mismatch test_at_import.py:4 -> test_at_import.py:6" in (
        text
    )
    native = suite.runpytest_subprocess("test_at_import.py")
    native.assert_outcomes(passed=1)


XPASSING = """
import multiprocessing
import pytest
from helpers import touch

@pytest.mark.xfail(reason="known")
def test_swallows():
    lock = multiprocessing.get_context("fork").Lock()
    try:
        multiprocessing.get_context("spawn").Process(target=touch, args=(lock,)).start()
    except RuntimeError:
        pass
"""


def test_an_xfail_test_failed_by_a_finding_is_a_failure_for_junitxml(suite) -> None:
    suite.makepyfile(test_xfail=XPASSING)
    result = suite.runpytest_subprocess("--mpsanitize", "--junitxml=out.xml", "test_xfail.py")
    result.assert_outcomes(failed=1)
    xml = (suite.path / "out.xml").read_text()
    assert 'failures="1"' in xml and 'skipped="0"' in xml, xml
    assert "<skipped" not in xml, xml


DRIVER = """
import os, subprocess, sys
import pytest, mpsanitizer

before = {k: v for k, v in os.environ.items() if k.startswith("MPSANITIZE")}
assert pytest.main(["-q", "-p", "no:cacheprovider", "--mpsanitize", "test_ok.py"]) == 0
after = {k: v for k, v in os.environ.items() if k.startswith("MPSANITIZE")}
child = subprocess.run([sys.executable, "-c", "print('child ok')"], capture_output=True, text=True)
print("same environment:", before == after)
print("enabled after:", mpsanitizer.is_enabled())
print("child:", child.returncode, child.stdout.strip(), child.stderr.strip())
print("second:", int(pytest.main(["-q", "-p", "no:cacheprovider", "test_ok.py"])))
"""


def test_a_session_leaves_the_process_and_its_environment_as_it_found_them(
    pytester: pytest.Pytester, monkeypatch
) -> None:
    monkeypatch.delenv("MPSANITIZE", raising=False)
    monkeypatch.delenv("MPSANITIZE_OPTIONS", raising=False)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", drive=DRIVER)
    result = pytester.runpython(pytester.path / "drive.py")
    assert result.ret == 0, result.stderr.str()
    said = [line for line in result.stdout.lines if ": " in line and "passed" not in line]
    assert said == [
        "same environment: True",
        "enabled after: False",
        "child: 0 child ok ",
        "second: 0",
    ], result.stdout.str()
