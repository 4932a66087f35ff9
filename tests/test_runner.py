"""``python -m mpsanitizer`` runs programs exactly like ``python`` does, and the
``MPSANITIZE`` toggle turns the sanitizer on in any interpreter, children included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"

INTROSPECT = """
import builtins, json, multiprocessing, sys

class Payload:
    def __init__(self, value):
        self.value = value

def child(payload, queue):
    queue.put((payload.value, __name__))

def facts():
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return {
        "name": __name__,
        "file": globals().get("__file__"),
        "spec": getattr(spec, "name", None),
        "loader": type(globals().get("__loader__")).__name__,
        "package": globals().get("__package__"),
        "argv": sys.argv,
        "path0": sys.path[0],
        "builtins": globals()["__builtins__"] in (builtins, vars(builtins)),
        "main_is_mp_main": sys.modules.get("__mp_main__") is main,
        "globals": sorted(name for name in globals() if name.startswith("__")),
    }

if __name__ == "__main__":
    result = facts()
    method = sys.argv[1]
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(Payload(method), queue))
    proc.start()
    result["child"] = queue.get(timeout=20)
    proc.join()
    result["exitcode"] = proc.exitcode
    print(json.dumps(result))
"""


_in_process = False  # set by runner_way: the runner keeps the program in its interpreter


@pytest.fixture(params=["relaunched", "in-process"])
def runner_way(request):
    """Both ways of the runner: as ``python`` itself (its usual way), and in its own
    interpreter (under a tracer, with --fail-on-warning, without our .pth)."""
    global _in_process
    _in_process = request.param == "in-process"
    yield request.param
    _in_process = False


both_ways = pytest.mark.usefixtures("runner_way")


def python(
    args: List[str], cwd: Path, env: Optional[Dict[str, str]] = None, timeout=120, stdin=None
):
    ours = ["-m", "mpsanitizer"]
    runner = next((i for i in range(len(args) - 1) if args[i : i + 2] == ours), None)
    if _in_process and runner is not None:  # after python's own options, if any
        args = [*args[: runner + 2], "--in-process", *args[runner + 2 :]]
    full_env = dict(os.environ)
    full_env.pop("MPSANITIZE", None)
    full_env.pop("MPSANITIZE_OPTIONS", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, input=stdin,
    )  # fmt: skip


def same_as_python(args: List[str], cwd: Path, stdin=None):
    """Run ``python args`` natively and under the runner; return the runner's result after
    checking that status, stdout and stderr are the native ones."""
    native = python(args, cwd, stdin=stdin)
    sanitized = python(["-m", "mpsanitizer", *args], cwd, stdin=stdin)
    assert (sanitized.returncode, sanitized.stdout, sanitized.stderr) == (
        native.returncode, native.stdout, native.stderr,
    )  # fmt: skip
    return sanitized


# CPython never re-imports a package's __main__ or -c code in spawn children:
# there the child's target comes from an importable module, as it must natively.
FROM_HELPER = INTROSPECT.replace(
    'if __name__ == "__main__":', "from helper import Payload, child\n\nif True:"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(INTROSPECT)
    (tmp_path / "helper.py").write_text(INTROSPECT)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(INTROSPECT)
    (package / "__main__.py").write_text(FROM_HELPER)
    app = tmp_path / "app_dir"
    app.mkdir()
    (app / "__main__.py").write_text(FROM_HELPER)
    (app / "helper.py").write_text(INTROSPECT)
    with zipfile.ZipFile(tmp_path / "app.pyz", "w") as archive:
        archive.writestr("__main__.py", FROM_HELPER)
        archive.writestr("helper.py", INTROSPECT)
    return tmp_path


@both_ways
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize(
    "how", ["script", "module", "package", "code", "directory", "zipapp", "stdin"]
)
def test_run_is_like_python(project: Path, how: str, method: str) -> None:
    target = {
        "script": ["app.py"],
        "module": ["-m", "pkg.mod"],
        "package": ["-m", "pkg"],
        "code": ["-c", FROM_HELPER],
        "directory": ["app_dir"],
        "zipapp": ["app.pyz"],
        "stdin": ["-"],
    }[how]
    if how == "stdin" and method != "fork":
        pytest.skip("python's own spawn children look for a file named '<stdin>'")
    stdin = FROM_HELPER if how == "stdin" else None
    native = python([*target, method, "--flag"], project, stdin=stdin)
    sanitized = python(["-m", "mpsanitizer", *target, method, "--flag"], project, stdin=stdin)
    assert native.returncode == 0, native.stderr
    assert sanitized.returncode == 0, sanitized.stderr
    assert json.loads(sanitized.stdout) == json.loads(native.stdout)
    assert sanitized.stderr == native.stderr == ""


@both_ways
@pytest.mark.parametrize("target", ["./app.py", "pkg/../app.py", "link.py"])
def test_script_paths_are_what_python_makes_of_them(project: Path, target: str) -> None:
    # __file__ absolute but not normalized, sys.path[0] the real directory of the script
    (project / "link.py").symlink_to(project / "pkg" / "mod.py")
    native = python([target, "fork"], project)
    sanitized = python(["-m", "mpsanitizer", target, "fork"], project)
    assert native.returncode == 0, native.stderr
    assert json.loads(sanitized.stdout) == json.loads(native.stdout)


def run_code(code: str, tmp_path: Path, *runner_args: str):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code))
    return python(["-m", "mpsanitizer", *runner_args, str(script)], tmp_path)


@both_ways
def test_exit_status_is_the_programs(tmp_path: Path) -> None:
    assert run_code("import sys; sys.exit(7)", tmp_path).returncode == 7
    result = run_code("import sys; sys.exit('bye')", tmp_path)
    assert (result.returncode, result.stderr) == (1, "bye\n")


@both_ways
def test_uncaught_exception_shows_user_frames_only(tmp_path: Path) -> None:
    result = run_code("def f():\n    raise KeyError('x')\nf()\n", tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "Traceback (most recent call last):"
    assert "mpsanitizer" not in result.stderr
    assert result.stderr.rstrip().endswith("KeyError: 'x'")


UNPICKLABLE_START = """
import multiprocessing, sys

class Refuses:
    def __reduce__(self):
        raise ValueError("not today")

target = lambda: None
FORK_LOCK = multiprocessing.get_context("fork").Lock()  # every process makes its own

def with_default(callback, lock=FORK_LOCK):  # pickled by name: the default never travels
    pass

def closure_over(lock):
    return lambda: lock

class DropsItsLock(multiprocessing.get_context(sys.argv[1]).Process):
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    queue = ctx.Queue()  # tracked: pickled through the sanitizer's reducer, before Refuses
    if sys.argv[2] == "lambda":
        proc = ctx.Process(target=target)
    elif sys.argv[2] == "default-lock":  # a fork Lock the child would never get, and a lambda
        proc = ctx.Process(target=with_default, args=(target,))
    elif sys.argv[2] == "closure-lock":
        proc = ctx.Process(target=print, args=(target, closure_over(FORK_LOCK)))
    elif sys.argv[2] == "dropped-lock":
        proc = DropsItsLock(target=print, args=(target,))
        proc.lock = FORK_LOCK
    elif sys.argv[2] == "reduce":
        proc = ctx.Process(target=print, args=([queue, Refuses()],))
    elif sys.argv[2] == "direct":  # reduction.dump called by the program, after a start
        proc = ctx.Process(target=print)
        proc.start()
        proc.join()
        from multiprocessing import reduction
        import io
        reduction.dump(Refuses(), io.BytesIO())
    else:  # a fork Lock: CPython 3.11.5+ refuses it, the sanitizer reports it
        proc = ctx.Process(target=print, args=(multiprocessing.get_context("fork").Lock(),))
    proc.start()
    proc.join()
"""


def _addresses_out(text: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", text)


@both_ways
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize(
    "what", ["lambda", "reduce", "direct", "default-lock", "closure-lock", "dropped-lock"]
)
def test_a_start_that_cannot_pickle_fails_with_pythons_own_traceback(
    tmp_path: Path, method: str, what: str
) -> None:
    """The most common multiprocessing error reads as CPython's: no frame of ours, the
    last one reduction.py's ``dump`` (3.11+ carets included). A fork Lock that pickling
    would never send (a default of a function pickled by name, a closure that cannot be
    pickled, an attribute the class's ``__getstate__`` leaves out) is not blamed."""
    (tmp_path / "app.py").write_text(UNPICKLABLE_START)
    native = python(["app.py", method, what], tmp_path)
    sanitized = python(["-m", "mpsanitizer", "app.py", method, what], tmp_path)
    assert native.returncode == 1 and "Traceback" in native.stderr
    assert (sanitized.returncode, _addresses_out(sanitized.stderr)) == (
        native.returncode, _addresses_out(native.stderr),
    )  # fmt: skip


def _traceback_of(stderr: str) -> str:
    return stderr[stderr.index("Traceback (most recent call last):") :]


@pytest.mark.skipif(sys.version_info < (3, 11, 5), reason="the child crashes instead")
def test_in_warn_mode_cpythons_refusal_keeps_its_own_traceback(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(UNPICKLABLE_START)
    native = python(["app.py", "spawn", "fork-lock"], tmp_path)
    warned = python(["app.py", "spawn", "fork-lock"], tmp_path, env={"MPSANITIZE": "warn"})
    assert "ContextMixingWarning" in warned.stderr
    assert warned.returncode == native.returncode == 1
    assert _traceback_of(warned.stderr) == _traceback_of(native.stderr)


def test_a_mismatch_is_raised_from_reductions_dump_frame(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(UNPICKLABLE_START)
    result = python(["-m", "mpsanitizer", "app.py", "spawn", "fork-lock"], tmp_path)
    frames = [line for line in result.stderr.splitlines() if line.startswith("  File ")]
    assert result.returncode == 1
    assert frames[-1].endswith(", in dump") and "reduction.py" in frames[-1], frames
    assert not [line for line in frames if f"mpsanitizer{os.sep}" in line], frames


INTERRUPTED_WITH_A_CHILD = """
import atexit, multiprocessing, time

atexit.register(print, "atexit handler ran")

if __name__ == "__main__":
    lock = multiprocessing.get_context("spawn").Lock()
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0.5,))
    child.start()
    raise KeyboardInterrupt
"""


@both_ways
def test_keyboard_interrupt_exits_like_python_after_finalizing(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(INTERRUPTED_WITH_A_CHILD)
    native = python(["app.py"], tmp_path)
    sanitized = python(["-m", "mpsanitizer", "app.py"], tmp_path)
    assert native.returncode == sanitized.returncode == -signal.SIGINT
    assert "atexit handler ran" in native.stdout  # the parent's (and the child's) atexit
    assert sanitized.stdout == native.stdout
    assert "leaked semaphore" not in sanitized.stderr  # multiprocessing's cleanup ran too
    assert sanitized.stderr == native.stderr


@both_ways
@pytest.mark.parametrize(
    "code",
    [
        "print('a')\nraise KeyboardInterrupt",  # no multiprocessing: our hooks never fired
        "import sys\nsys.excepthook = lambda *a: print('hook')\nraise KeyboardInterrupt",
        "class K(KeyboardInterrupt): pass\nraise K()",  # python dies of SIGINT only for its own
    ],
)
def test_an_uncaught_keyboard_interrupt_ends_the_process_as_pythons_does(tmp_path, code) -> None:
    (tmp_path / "app.py").write_text(code)
    native = python(["app.py"], tmp_path)
    sanitized = python(["-m", "mpsanitizer", "app.py"], tmp_path)
    assert (sanitized.returncode, sanitized.stdout) == (native.returncode, native.stdout)


@both_ways
def test_uncaught_mismatch_prints_report_and_exits_1() -> None:
    result = python(["-m", "mpsanitizer", "fork_lock_to_spawn.py"], EXAMPLES)
    assert result.returncode == 1
    assert "mpsanitizer.ContextMismatchError" in result.stderr
    assert "runner.py" not in result.stderr and "program.py" not in result.stderr
    assert "child: got the lock" not in result.stdout
    assert re.fullmatch(
        r"mpsanitizer: findings in process \d+: 1 context-mismatch",
        result.stderr.rstrip().splitlines()[-1],
    )


def test_fail_on_warning(tmp_path: Path) -> None:
    plain = python(["-m", "mpsanitizer", "spawn_lock_to_fork.py"], EXAMPLES)
    assert plain.returncode == 0
    strict_ci = python(
        ["-m", "mpsanitizer", "--fail-on-warning", "spawn_lock_to_fork.py"], EXAMPLES
    )
    assert strict_ci.returncode == 3
    assert "1 context-mixing" in strict_ci.stderr


@pytest.mark.parametrize(
    ("toggle", "args", "expected"),
    [
        ("warn", [], "warn False"),
        ("strict", [], "error True"),
        ("warn", ["--mode", "error"], "error False"),
        ("0", [], "error False"),
    ],
)
def test_the_environment_toggle_counts_under_the_runner(tmp_path, toggle, args, expected) -> None:
    (tmp_path / "show.py").write_text(
        "import mpsanitizer\ns = mpsanitizer.settings()\nprint(s.mode, s.strict)\n"
    )
    result = python(["-m", "mpsanitizer", *args, "show.py"], tmp_path, {"MPSANITIZE": toggle})
    assert (result.returncode, result.stdout, result.stderr) == (0, expected + "\n", "")


IN_A_CHILD = """
import multiprocessing

def grandchild(lock):
    pass

def child():
    lock = multiprocessing.get_context("spawn").Lock()
    proc = multiprocessing.get_context("fork").Process(target=grandchild, args=(lock,))
    proc.start()
    proc.join()

if __name__ == "__main__":
    proc = multiprocessing.get_context("spawn").Process(target=child)
    proc.start()
    proc.join()
    print("exit", proc.exitcode)
"""


@pytest.mark.parametrize("log", [False, True])
def test_fail_on_warning_counts_the_child_processes_findings(tmp_path: Path, log: bool) -> None:
    (tmp_path / "tree.py").write_text(IN_A_CHILD)
    (tmp_path / "logs.1").write_text('{"left": "by an earlier run"}\n')
    args = ["--log-path", str(tmp_path / "logs")] if log else []
    (tmp_path / "tmp").mkdir()
    result = python(
        ["-m", "mpsanitizer", "--fail-on-warning", *args, "tree.py"],
        tmp_path,
        {"TMPDIR": str(tmp_path / "tmp")},
    )
    assert (result.returncode, result.stdout) == (3, "exit 0\n"), result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last == "mpsanitizer: findings in its child processes: 1 context-mixing"
    assert list((tmp_path / "tmp").iterdir()) == []  # our own log directory is gone


LATE_START = """
import atexit, multiprocessing, sys, threading, time

FORK, SPAWN = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")

def start(lock):
    time.sleep(0.2)  # after the script's body has returned
    try:
        SPAWN.Process(target=print, args=(lock,)).start()
    except RuntimeError as exc:  # raised before any child exists
        print(type(exc).__name__, flush=True)

if __name__ == "__main__":
    lock = FORK.Lock()
    if sys.argv[1] == "thread":
        threading.Thread(target=start, args=(lock,)).start()
    else:
        atexit.register(start, lock)
"""


@pytest.mark.parametrize("when", ["thread", "atexit"])
def test_findings_after_the_scripts_body_count_too(tmp_path: Path, when: str) -> None:
    (tmp_path / "late.py").write_text(LATE_START)
    result = python(["-m", "mpsanitizer", "--fail-on-warning", "late.py", when], tmp_path)
    assert (result.returncode, result.stdout) == (3, "ContextMismatchError\n"), result.stderr
    assert re.fullmatch(
        r"mpsanitizer: findings in process \d+: 1 context-mismatch",
        result.stderr.rstrip().splitlines()[-1],
    )


@both_ways
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.py"], "mpsanitizer: error: can't open file 'missing.py': no such file"),
        (["--bogus", "x.py"], "mpsanitizer: error: unknown option --bogus"),
        (["--fail-on-warning=1", "x.py"], "mpsanitizer: error: option --fail-on-warning takes no"),
        (["--mode", "loud", "x.py"], "mpsanitizer: error: --mode: mode must be error or warn"),
        (["--stack-depth=zero", "x.py"], "mpsanitizer: error: --stack-depth: stack_depth must be"),
        (["-m"], "mpsanitizer: error: argument -m needs a value"),
        ([], "mpsanitizer: error: no script, -m module or -c code to run"),
        (["-m", "no_such_module_xyz"], "mpsanitizer: error: no module named no_such_module_xyz"),
        (["-m", "no_such_pkg.mod"], "mpsanitizer: error: no module named no_such_pkg.mod"),
        (["-m", "os.no_such_mod"], "mpsanitizer: error: no module named os.no_such_mod"),
        (["."], "mpsanitizer: error: can't find '__main__' module in '.'"),
    ],
)
def test_bad_command_lines_get_one_line_and_status_2(tmp_path: Path, args, message) -> None:
    result = python(["-m", "mpsanitizer", *args], tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(message)


@pytest.mark.parametrize("value", ["1", "error", "warn", "strict", "TRUE"])
def test_toggle_turns_it_on(value: str) -> None:
    result = python(["fork_lock_to_spawn.py"], EXAMPLES, {"MPSANITIZE": value})
    if value == "warn":
        assert "ContextMixingWarning: mpsanitizer: ERROR: context-mismatch" in result.stderr
    else:
        assert result.returncode == 1
        assert "mpsanitizer.ContextMismatchError" in result.stderr


FIRST_USE_RACE = """
import multiprocessing as mp, sys, threading

sys.setswitchinterval(1e-6)  # threads switch at every chance: the first use races
made, raised = [], []

def worker():
    made.append(mp.get_context("spawn").Lock())
    try:
        mp.get_context("spawn").Process(target=abs, args=(mp.get_context("fork").Lock(),)).start()
    except RuntimeError as exc:
        raised.append(type(exc).__name__)

if __name__ == "__main__":
    threads = [threading.Thread(target=worker) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(sum(not hasattr(lock, "_mpsanitizer_origin") for lock in made), sorted(set(raised)))
"""


@pytest.mark.parametrize("attempt", range(3))
def test_threads_racing_to_the_first_use_are_all_checked(tmp_path: Path, attempt: int) -> None:
    """Activation from the environment puts the real patches in place at the first use;
    calls that other threads make meanwhile wait for them, not reach CPython unpatched."""
    (tmp_path / "app.py").write_text(FIRST_USE_RACE)
    result = python(["app.py"], tmp_path, {"MPSANITIZE": "1"})
    assert result.stdout == "0 ['ContextMismatchError']\n", result.stderr


FIRST_USE_WHILE_IMPORTING = """
import multiprocessing, threading

go = threading.Event()

def first_lock():
    go.wait()
    multiprocessing.Lock()

def first_queue():  # imports multiprocessing.queues while the other thread patches
    go.wait()
    multiprocessing.Queue()

threads = [threading.Thread(target=first_lock), threading.Thread(target=first_queue)]
[t.start() for t in threads]
go.set()
[t.join() for t in threads]
print("ok")
"""


@pytest.mark.parametrize("attempt", range(3))
def test_a_first_use_racing_an_import_does_not_deadlock(tmp_path: Path, attempt: int) -> None:
    (tmp_path / "app.py").write_text(FIRST_USE_WHILE_IMPORTING)
    result = python(["app.py"], tmp_path, {"MPSANITIZE": "1"}, timeout=60)
    assert result.stdout == "ok\n", result.stderr


def test_option_values_are_read_as_case_blind_as_the_toggle() -> None:
    env = {"MPSANITIZE": "1", "MPSANITIZE_OPTIONS": "mode=WARN:strict=True"}
    result = python(["fork_lock_to_spawn.py"], EXAMPLES, env)
    assert "ContextMixingWarning: mpsanitizer: ERROR: context-mismatch" in result.stderr
    options = ["--mode=WARN", "--strict=TRUE"]  # the runner's own options too
    result = python(["-m", "mpsanitizer", *options, "fork_lock_to_spawn.py"], EXAMPLES)
    assert "ContextMixingWarning: mpsanitizer: ERROR: context-mismatch" in result.stderr


def test_a_package_of_the_current_directory_runs_as_python_m_runs_it(tmp_path: Path) -> None:
    """python -m finds it through the current directory, which the runner's own import
    keeps off the path: the runner must still become ``python -m stk``."""
    (tmp_path / "stk").mkdir()
    (tmp_path / "stk" / "__init__.py").write_text("")
    (tmp_path / "stk" / "__main__.py").write_text(
        "import inspect\nprint([frame.function for frame in inspect.stack()])\n"
    )
    assert "'main'" not in same_as_python(["-m", "stk"], tmp_path).stdout


@both_ways
@pytest.mark.parametrize("module", ["cli.run", "cli"])
def test_parent_packages_see_the_arguments_python_gives_them(tmp_path, module) -> None:
    """``python -m cli.run x`` imports ``cli`` with ``sys.argv == ['-m', 'x']``."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "__init__.py").write_text("import sys\nprint('package', sys.argv)\n")
    for name in ("run", "__main__"):
        (tmp_path / "cli" / f"{name}.py").write_text("import sys\nprint('module', sys.argv)\n")
    result = same_as_python(["-m", module, "x"], tmp_path)
    assert "package ['-m', 'x']" in result.stdout


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "OFF"])
def test_toggle_leaves_it_off(value: str) -> None:
    result = python(["spawn_lock_to_fork.py"], EXAMPLES, {"MPSANITIZE": value})
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize(
    "env",
    [{"MPSANITIZE": "bogus"}, {"MPSANITIZE": "1", "MPSANITIZE_OPTIONS": "mode=loud"},
     {"MPSANITIZE": "1", "MPSANITIZE_OPTIONS": "colour=blue"}],
)  # fmt: skip
def test_bad_environment_is_one_line_and_non_zero(env: Dict[str, str], tmp_path: Path) -> None:
    result = python(["-c", "print('ran')"], tmp_path, env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("mpsanitizer: error: ")


NESTED = """
import multiprocessing, sys

def grandchild(lock):
    pass

def child(method):
    lock = multiprocessing.get_context("fork").Lock()
    multiprocessing.get_context(method).Process(target=grandchild, args=(lock,)).start()

if __name__ == "__main__":
    proc = multiprocessing.get_context(sys.argv[1]).Process(target=child, args=(sys.argv[2],))
    proc.start()
    proc.join()
    print("child exit", proc.exitcode)
"""


@pytest.mark.parametrize("grandchild", ["spawn", "forkserver"])
@pytest.mark.parametrize("child", ["fork", "spawn", "forkserver"])
def test_children_are_checked_like_the_top_process(tmp_path: Path, child, grandchild) -> None:
    (tmp_path / "nested.py").write_text(NESTED)
    result = python(["-m", "mpsanitizer", "nested.py", child, grandchild], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child exit 1"
    assert "mpsanitizer.ContextMismatchError" in result.stderr
    assert f"(start method {grandchild!r}) cannot reach it" in result.stderr
    assert 'nested.py", line 8, in child' in result.stderr


def test_sitecustomize_example_chains_and_activates(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import sys; sys.stderr.write('chained\\n')\n")
    root = Path(__file__).resolve().parent.parent
    example = root / "sitecustomize_example"
    # -S: no .pth line runs, so only the example can activate; import it as site would
    code = (
        f"import sys; sys.path[:0] = {[str(example), str(other), str(root)]!r}; "
        "import sitecustomize, mpsanitizer; print(mpsanitizer.is_enabled())"
    )
    result = python(["-S", "-c", code], tmp_path, {"MPSANITIZE": "warn"})
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("True\n", "chained\n")
    unset = python(["-S", "-c", code], tmp_path)
    assert (unset.stdout, unset.stderr) == ("False\n", "chained\n")


LAZY_PROBE = """
import sys
import mpsanitizer
print(mpsanitizer.is_enabled(), "multiprocessing" in sys.modules, "wrapt" in sys.modules)
"""

CHILD_PROBE = """
import multiprocessing, sys

def probe(queue):
    queue.put("wrapt" in sys.modules)

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    queue = ctx.SimpleQueue()
    proc = ctx.Process(target=probe, args=(queue,))
    proc.start()
    print("child imported wrapt:", queue.get())
    proc.join()
"""


def test_activation_costs_nothing_until_multiprocessing_is_used(tmp_path: Path) -> None:
    result = python(["-c", LAZY_PROBE], tmp_path, {"MPSANITIZE": "1"})
    assert result.stdout.split() == ["True", "False", "False"], result.stderr


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_children_that_only_run_their_target_never_import_wrapt(tmp_path: Path, method) -> None:
    (tmp_path / "probe.py").write_text(CHILD_PROBE)
    result = python(["-m", "mpsanitizer", "probe.py", method], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child imported wrapt: False"


def test_explicit_enable_and_disable_take_over_from_lazy_activation(tmp_path: Path) -> None:
    code = """
import multiprocessing.synchronize as s, multiprocessing.reduction as r, mpsanitizer, sys
armed = s.SemLock.__init__
mpsanitizer.enable(mode="warn")
hook = vars(s.SemLock)["__init__"]
print(hook is not armed, hook.__wrapped__ is armed.__wrapped__, mpsanitizer.settings().mode)
mpsanitizer.disable()
print(mpsanitizer.is_enabled(), s.SemLock.__init__ is armed.__wrapped__)
"""
    result = python(["-c", code], tmp_path, {"MPSANITIZE": "1"})
    assert result.stdout.split() == ["True", "True", "warn", "False", "True"], result.stderr


WRAPS_THE_ARMED_CONSTRUCTOR = """
import multiprocessing as mp, multiprocessing.synchronize as s

calls = []
saved = s.SemLock.__init__  # under MPSANITIZE=1, the stand-in that arms the sanitizer

def counting(self, *args, **kwargs):
    calls.append(1)
    return saved(self, *args, **kwargs)

s.SemLock.__init__ = counting

if __name__ == "__main__":
    lock = mp.get_context("fork").Lock()
    print("SemLock calls:", len(calls))
    mp.get_context("spawn").Process(target=print, args=(lock,)).start()
"""


def test_a_patch_put_over_an_armed_stand_in_runs_once_and_we_still_check(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(WRAPS_THE_ARMED_CONSTRUCTOR)
    result = python(["app.py"], tmp_path, {"MPSANITIZE": "1"})
    assert result.stdout.splitlines() == ["SemLock calls: 1"], result.stderr
    assert result.returncode == 1
    assert "context-mismatch: 1 object handed to SpawnProcess" in result.stderr
    assert "RecursionError" not in result.stderr


CREATE_THEN_START = """
import multiprocessing as mp, multiprocessing.reduction as r, sys, mpsanitizer

def main():
    mpsanitizer.enable()
    lock, queue = mp.get_context("spawn").Lock(), mp.get_context("fork").Queue()
    print("after creating:", "wrapt" in sys.modules, type(r.dump).__name__)
    child = mp.get_context("spawn").Process(target=print, args=("child",))
    child.start()
    child.join()
    print("after a start:", "wrapt" in sys.modules, type(r.dump).__name__)

if __name__ == "__main__":
    main()
"""


def test_wrapt_and_the_checks_load_at_the_first_start_not_at_the_first_primitive(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(CREATE_THEN_START)
    result = python(["app.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "after creating: False function",
        "child",
        "after a start: True FunctionWrapper",
    ]


def test_log_path_writes_one_json_lines_file_per_process(tmp_path: Path) -> None:
    (tmp_path / "nested.py").write_text(NESTED)
    prefix = tmp_path / "logs" / "mps"
    prefix.parent.mkdir()
    result = python(
        ["-m", "mpsanitizer", f"--log-path={prefix}", "nested.py", "spawn", "forkserver"], tmp_path
    )
    assert result.stdout.strip() == "child exit 1", result.stderr
    files = sorted(prefix.parent.iterdir())
    assert len(files) == 1 and files[0].name.startswith("mps.")
    (record,) = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert record["pid"] == int(files[0].name.split(".")[1])
    assert record["parent_pid"] != record["pid"]
    assert record["reporting_process"] == "SpawnProcess-1"
    assert (record["kind"], record["severity"]) == ("context-mismatch", "error")
    assert (record["origin_start_method"], record["target_start_method"]) == ("fork", "forkserver")
    assert (record["object_type"], record["path"]) == ("Lock", "args[0]")
    assert record["created_at"][-1] == {"file": str(tmp_path / "nested.py"), "line": 8,
                                        "function": "child"}  # fmt: skip
    assert record["started_at"][-1]["line"] == 9
    assert record["process_class"] == "ForkServerProcess"


TREE = """
import concurrent.futures, json, multiprocessing, os, subprocess, sys, tempfile
from multiprocessing.managers import SyncManager

def active():
    import mpsanitizer
    return mpsanitizer.is_enabled()

def report(queue, name):
    queue.put((name, active()))

def grandparent(queue, method):
    report(queue, f"{method} child")
    ctx = multiprocessing.get_context(method)
    p = ctx.Process(target=report, args=(queue, f"{method} grandchild")); p.start(); p.join()

def write_probe(path):
    with open(path, "w") as handle:
        handle.write(json.dumps(active()))

if __name__ == "__main__":
    results = {"top": active()}
    for method in ("fork", "spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        p = ctx.Process(target=grandparent, args=(queue, method)); p.start(); p.join()
        results.update(dict(queue.get(timeout=60) for _ in range(2)))
        with ctx.Pool(1) as pool:
            results[f"{method} pool worker"] = pool.apply(active)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            results[f"{method} executor worker"] = ex.submit(active).result(60)
        probe = os.path.join(tempfile.mkdtemp(), "probe")
        manager = SyncManager(ctx=ctx)
        manager.start(initializer=write_probe, initargs=(probe,))
        manager.shutdown()
        with open(probe) as handle:
            results[f"{method} manager server"] = json.load(handle)
    code = "import mpsanitizer; print(mpsanitizer.is_enabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    results["python subprocess"] = out.strip() == "True"
    print(json.dumps(results))
"""


@pytest.mark.parametrize("way", ["runner", "environment"])
def test_every_process_of_the_tree_is_active(tmp_path: Path, way: str) -> None:
    (tmp_path / "tree.py").write_text(TREE)
    if way == "runner":
        result = python(["-m", "mpsanitizer", "tree.py"], tmp_path)
    else:
        result = python(["tree.py"], tmp_path, {"MPSANITIZE": "1"})
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert len(results) == 1 + 3 * 5 + 1
    assert {name for name, on in results.items() if not on} == set()


def test_nothing_is_imported_when_the_toggle_is_off(tmp_path: Path) -> None:
    result = python(["-X", "importtime", "-c", "pass"], tmp_path, {"MPSANITIZE": "0"})
    assert "mpsanitizer" not in result.stderr


def test_resource_tracker_is_skipped(tmp_path: Path) -> None:
    # the tracker is started as `python -c 'from multiprocessing.resource_tracker import main...'`
    code = "import mpsanitizer; print(mpsanitizer.is_enabled())  # multiprocessing.resource_tracker"
    result = python(["-c", code], tmp_path, {"MPSANITIZE": "1"})
    assert result.stdout.strip() == "False", result.stderr


MOVING = """
import multiprocessing, os, shutil, sys

def child(method, mismatch):
    try:  # a finding in the child, logged under the parent's prefix
        fork_lock = multiprocessing.get_context("fork").Lock()
        if mismatch:
            multiprocessing.get_context("spawn").Process(target=print, args=(fork_lock,)).start()
    except RuntimeError:
        pass
    print(method, "child ran", flush=True)

if __name__ == "__main__":
    os.chdir(sys.argv[1])  # elsewhere: a relative log path now means another directory
    if sys.argv[2:]:
        shutil.rmtree(sys.argv[2])  # the log directory is gone before the children start
    for method in ("spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        p = ctx.Process(target=child, args=(method, not sys.argv[2:]))
        p.start()
        p.join()
        print(method, p.exitcode, flush=True)
"""


def test_a_relative_log_path_is_the_same_file_prefix_in_every_child(tmp_path: Path) -> None:
    (tmp_path / "moving.py").write_text(MOVING)
    (tmp_path / "logs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    env = {"MPSANITIZE": "1", "MPSANITIZE_OPTIONS": "log_path=logs/mps"}
    result = python(["moving.py", str(tmp_path / "elsewhere")], tmp_path, env)
    assert result.stdout.splitlines() == [
        "spawn child ran",
        "spawn 0",
        "forkserver child ran",
        "forkserver 0",
    ], result.stderr
    assert "mpsanitizer: error" not in result.stderr
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 2 and all(log.name.startswith("mps.") for log in logs)
    assert not list((tmp_path / "elsewhere").iterdir())


def test_a_child_whose_log_directory_is_gone_runs_without_the_sanitizer(tmp_path: Path) -> None:
    """Its parent took the settings; the program (or pytest, at its end) removed the
    directory since: the child says so in a line and does its work."""
    (tmp_path / "moving.py").write_text(MOVING)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"MPSANITIZE": "1", "MPSANITIZE_OPTIONS": f"log_path={logs / 'mps'}"}
    result = python(["moving.py", str(tmp_path), str(logs)], tmp_path, env)
    assert result.stdout.splitlines() == [
        "spawn child ran",
        "spawn 0",
        "forkserver child ran",
        "forkserver 0",
    ], result.stderr
    gone = (
        f"mpsanitizer: error: MPSANITIZE_OPTIONS: log_path {str(logs / 'mps')!r}: "
        f"{str(logs)!r} is not a writable directory; this process runs without mpsanitizer"
    )
    # the spawn child and the fork server, once each (site runs a venv's .pth line twice
    # where lib64 links to lib)
    assert result.stderr.splitlines() == [gone, gone], result.stderr


def test_a_log_path_in_no_writable_directory_is_refused(tmp_path: Path) -> None:
    """Else every process would drop its records without a word."""
    prefix = str(tmp_path / "missing" / "log")
    result = python(["-m", "mpsanitizer", "--log-path", prefix, "-c", "print('ran')"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"mpsanitizer: error: --log-path: log_path {prefix!r}: "
        f"{str(tmp_path / 'missing')!r} is not a writable directory\n"
    )


@pytest.mark.parametrize(("flag", "status"), [("--strict=1", 1), ("--strict=off", 0)])
def test_strict_takes_a_value_too(flag: str, status: int) -> None:
    result = python(["-m", "mpsanitizer", flag, "spawn_lock_to_fork.py"], EXAMPLES)
    assert result.returncode == status, result.stderr  # strict: the mixing is an error
    bad = python(["-m", "mpsanitizer", "--strict=maybe", "spawn_lock_to_fork.py"], EXAMPLES)
    assert bad.returncode == 2 and bad.stderr.startswith("mpsanitizer: error: --strict")


@pytest.mark.parametrize("name", ["a:b", "a,b"])
def test_a_log_path_children_could_not_receive_is_refused(tmp_path: Path, name: str) -> None:
    # the settings reach children as MPSANITIZE_OPTIONS=key=value:key=value
    prefix = str(tmp_path / name)
    result = python(["-m", "mpsanitizer", "--log-path", prefix, "-c", "print('ran')"], tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"mpsanitizer: error: --log-path: log_path {prefix!r} contains")
    api = python(["-c", f"import mpsanitizer; mpsanitizer.enable(log_path={prefix!r})"], tmp_path)
    assert api.stderr.splitlines()[-1].startswith(f"ValueError: mpsanitizer: log_path {prefix!r}")


@both_ways
@pytest.mark.parametrize("how", ["script", "code"])
def test_mp_main_appears_only_when_multiprocessing_is_imported(tmp_path: Path, how: str) -> None:
    code = (
        "import sys; print('__mp_main__' in sys.modules); import multiprocessing; "
        "print(sys.modules['__mp_main__'] is sys.modules['__main__'])\n"
    )
    (tmp_path / "app.py").write_text(code)
    result = same_as_python(["app.py"] if how == "script" else ["-c", code], tmp_path)
    assert result.stdout == "False\nTrue\n"


CLOSES_STDERR = """
import multiprocessing as mp, sys, warnings
warnings.simplefilter("ignore")
if __name__ == "__main__":
    lock = mp.get_context("spawn").Lock()
    p = mp.get_context("fork").Process(target=print, args=(lock,)); p.start(); p.join()
    sys.stderr.close()
"""


@both_ways
def test_a_closed_stderr_does_not_change_the_exit_status(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(CLOSES_STDERR)
    assert same_as_python(["app.py"], tmp_path).returncode == 0


@both_ways
def test_a_failing_excepthook_is_reported_like_python(tmp_path: Path) -> None:
    code = "import sys\nsys.excepthook = lambda *args: 1 / 0\nraise KeyError('x')\n"
    (tmp_path / "app.py").write_text(code)
    result = same_as_python(["app.py"], tmp_path)
    assert "Original exception was:" in result.stderr


SYNTAX_ERRORS = {"unclosed": "x = (\n", "no-block": "if x:\n", "indent": "x = 1\n  y = 2\n"}


@both_ways
@pytest.mark.parametrize("error", sorted(SYNTAX_ERRORS))
@pytest.mark.parametrize("how", ["script", "code", "module", "directory"])
def test_a_syntax_error_is_reported_like_python(tmp_path: Path, how: str, error: str) -> None:
    source = SYNTAX_ERRORS[error]
    (tmp_path / "bad.py").write_text(source)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text(source)
    target = {
        "script": ["bad.py"], "code": ["-c", source], "module": ["-m", "bad"], "directory": ["app"]
    }[how]  # fmt: skip
    result = same_as_python([*target, "arg"], tmp_path)
    assert result.returncode == 1 and "Error" in result.stderr


@both_ways
@pytest.mark.parametrize(
    ("init", "last_line"),
    [("", "SyntaxError: "), ("raise RuntimeError('boom')", "RuntimeError: boom")],
)
def test_a_package_module_that_fails_to_load_shows_no_runner_frames(
    tmp_path: Path, init: str, last_line: str
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(init)
    (tmp_path / "pkg" / "bad.py").write_text("x = (\n")
    result = python(["-m", "mpsanitizer", "-m", "pkg.bad"], tmp_path)
    assert result.returncode == 1
    assert "mpsanitizer" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(last_line)


@both_ways
@pytest.mark.parametrize(
    "args",
    [["-cimport sys; print(sys.argv)", "a"], ["-mjson.tool", "--sort-keys"], ["-m", "json.tool"]],
)
def test_joined_m_and_c_are_taken_as_python_takes_them(tmp_path: Path, args) -> None:
    assert same_as_python(args, tmp_path, stdin='{"b": 1, "a": [2]}').stdout.strip()


@both_ways
@pytest.mark.parametrize("code", ["1/0", "def f():\n    return 1/0\nf()"])
def test_an_error_in_code_shows_what_python_shows(tmp_path: Path, code: str) -> None:
    # 3.13 shows the -c source lines in tracebacks, earlier versions show none
    same_as_python(["-c", code], tmp_path)


@both_ways
@pytest.mark.parametrize(
    "body", ["print('done')\n", "raise KeyError(1)\n", "import sys\nsys.exit(3)\n"]
)
def test_dash_i_gives_the_prompt_as_python_does(tmp_path: Path, body: str) -> None:
    (tmp_path / "app.py").write_text(body)
    stdin = "import sys\nprint(type(getattr(sys, 'last_value', None)).__name__)\n"
    native = python(["-i", "app.py"], tmp_path, stdin=stdin)
    sanitized = python(["-i", "-m", "mpsanitizer", "app.py"], tmp_path, stdin=stdin)
    assert (sanitized.returncode, sanitized.stdout, sanitized.stderr) == (
        native.returncode, native.stdout, native.stderr,
    )  # fmt: skip


@both_ways
@pytest.mark.skipif(sys.version_info < (3, 10), reason="3.9's runpy imports typing itself")
def test_a_module_of_the_programs_own_named_typing_is_the_one_imported(tmp_path: Path) -> None:
    # In a directory of its own: `python -m` puts the working directory first on sys.path
    # while runpy still imports (on 3.9, typing), natively too.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "typing.py").write_text("print('local typing')\n")
    (tmp_path / "app" / "main.py").write_text("import typing\nprint(typing.__file__)\n")
    result = same_as_python(["app/main.py"], tmp_path)
    assert result.stdout.splitlines()[0] == "local typing"


FRAMES = """
import inspect, os, sys, traceback, warnings
warnings.warn("at the top", stacklevel=2)
def deep():
    warnings.warn("from a function", stacklevel=3)
deep()
print([frame.function for frame in inspect.stack()], sys._getframe().f_back)
traceback.print_stack()
print(sys.flags.dev_mode, sys.warnoptions, sys._xoptions, getattr(sys, "orig_argv", [])[1:])
print(os.getpid())
"""


def test_relaunched_the_program_has_pythons_own_frames_flags_and_pid(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(FRAMES)
    flags = ["-X", "dev", "-W", "error::DeprecationWarning", "-B"]
    native = python([*flags, "app.py"], tmp_path)
    result = python([*flags, "-m", "mpsanitizer", "app.py"], tmp_path)
    assert (result.returncode, result.stderr) == (0, native.stderr)
    assert result.stdout.splitlines()[:-1] == native.stdout.splitlines()[:-1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mpsanitizer", "app.py"], cwd=tmp_path, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out, _ = process.communicate(timeout=60)
    assert out.splitlines()[-1] == str(process.pid)


@pytest.mark.parametrize("given", [["app.py", "x"], ["--", "app.py", "x"], ["--", "-app.py"]])
def test_relaunched_the_program_has_the_command_line_it_was_given(tmp_path: Path, given) -> None:
    code = "import sys; print(sys.argv, getattr(sys, 'orig_argv', [])[1:])"
    (tmp_path / "app.py").write_text(code)
    (tmp_path / "-app.py").write_text(code)
    native = python(given, tmp_path)
    assert python(["-m", "mpsanitizer", *given], tmp_path).stdout == native.stdout != ""


TRACED = """
import runpy, sys
traced = set()
def tracer(frame, event, arg):
    traced.add(frame.f_code.co_filename)
sys.settrace(tracer)
sys.argv = ["mpsanitizer", "app.py"]
try:
    runpy.run_module("mpsanitizer", run_name="__main__", alter_sys=True)
finally:
    sys.settrace(None)
    print("traced the program:", any(name.endswith("app.py") for name in traced))
"""


def test_under_a_tracer_the_runner_keeps_the_program_in_its_interpreter(tmp_path: Path) -> None:
    """coverage run -m mpsanitizer, pdb, cProfile: a new interpreter would lose them."""
    (tmp_path / "app.py").write_text("import inspect\nprint(len(inspect.stack()) > 1)\n")
    result = python(["-c", TRACED], tmp_path)
    assert result.stdout.splitlines() == ["True", "traced the program: True"], result.stderr


@pytest.mark.parametrize(
    "argv, ours",
    [
        (["python", "-m", "mpsanitizer", "app.py"], True),
        (["python", "-X", "dev", "-W", "error", "-Bm", "mpsanitizer", "app.py"], True),
        (["python", "-Werror", "-Xdev", "-mmpsanitizer", "-m", "pdb"], True),
        (["python", "-m", "mpsanitizer.__main__", "app.py"], True),
        (["python", "-bW", "error", "-BX", "dev", "-m", "mpsanitizer", "app.py"], True),
        (["python", "-m", "pdb", "-m", "mpsanitizer", "app.py"], False),
        (["python", "-mcProfile", "-m", "mpsanitizer", "app.py"], False),
        (["python", "-c", "import runpy", "-m", "mpsanitizer"], False),
        (["python", "wrapper.py", "-m", "mpsanitizer"], False),
        ([], True),
    ],
)
def test_the_runner_becomes_the_program_only_when_python_runs_it_as_its_own(argv, ours) -> None:
    from mpsanitizer import relaunch

    assert relaunch._started_as_the_program(argv) is ours


RUN_UNDER_PDB = """
import mpsanitizer, sys
print("program ran, sanitizer on:", mpsanitizer.is_enabled(), sys.argv)
"""


def test_under_pdb_the_program_runs_in_the_debuggers_session(tmp_path: Path) -> None:
    """pdb's ``continue`` with no breakpoint removes its tracer: no sign of a debugger is
    left but the command line, and a new interpreter would end the session."""
    (tmp_path / "app.py").write_text(RUN_UNDER_PDB)
    result = python(["-m", "pdb", "-m", "mpsanitizer", "app.py", "x"], tmp_path, stdin="c\nq\n")
    out = result.stdout
    assert "program ran, sanitizer on: True ['app.py', 'x']" in out, result.stderr
    assert "(Pdb)" in out[out.index("program ran") :], out  # the same session goes on
    assert result.returncode == 0


FLAGS = """
import os, sys
print(sys._xoptions.get("frob"), sys.flags.optimize, sys.flags.inspect)
sys.stdout.write("unbuffered or lost")  # lost at os._exit unless -u
os._exit(0)
"""


@pytest.mark.parametrize("flags", [["-u", "-X", "frob=1"], ["-uO", "-Xfrob"]])
def test_interpreter_options_reach_the_program_on_every_version(tmp_path, flags) -> None:
    """3.9 has no sys.orig_argv: -u, every -X and the rest are rebuilt from their effects."""
    (tmp_path / "app.py").write_text(FLAGS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "MPSANITIZE")}

    def run(args):
        return subprocess.run(
            [sys.executable, *flags, *args, "app.py"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip

    assert run(["-m", "mpsanitizer"]) == run([])


def test_options_that_leave_no_trace_in_the_interpreter_reach_the_program(tmp_path) -> None:
    """-x skips the script's first line and sets no flag; -X options keep their order (3.9
    reads them from the kernel's record of the command line)."""
    (tmp_path / "app.py").write_text("raise SystemExit(5)\nimport sys; print(list(sys._xoptions))")
    flags = ["-x", "-X", "b=2", "-X", "a=1"]
    native = python([*flags, "app.py"], tmp_path)
    assert (native.returncode, native.stdout) == (0, "['b', 'a']\n")
    result = python([*flags, "-m", "mpsanitizer", "app.py"], tmp_path)
    assert (result.returncode, result.stdout) == (0, native.stdout), result.stderr


def test_dash_dash_ends_the_options_as_it_does_for_python(tmp_path: Path) -> None:
    (tmp_path / "-odd.py").write_text("import sys; print(sys.argv)")
    assert same_as_python(["--", "-odd.py", "x"], tmp_path).stdout == "['-odd.py', 'x']\n"


@both_ways
@pytest.mark.skipif(sys.version_info < (3, 12), reason="runpy imports contextlib itself")
def test_modules_of_the_current_directory_do_not_shadow_ours(tmp_path: Path) -> None:
    """python sub/app.py does not see ./contextlib.py; python -m puts . first on the path."""
    (tmp_path / "contextlib.py").write_text("raise ImportError('the wrong contextlib')")
    (tmp_path / "mymod.py").write_text("print('mymod ran')")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "app.py").write_text("import sys; print(sys.path[0])")
    same_as_python(["sub/app.py"], tmp_path)
    same_as_python(["-m", "mymod"], tmp_path)


@both_ways
def test_a_script_read_through_a_symbolic_link_to_a_pipe(tmp_path: Path) -> None:
    """python /dev/stdin: the link is read once, the pipe has no real path."""
    code = "import sys; print(sys.path[0], sys.argv)"
    assert same_as_python(["/dev/stdin"], tmp_path, stdin=code).stdout.startswith("/proc/self/fd")


def test_fail_on_warning_imports_nothing_the_programs_exit_could_notice(tmp_path: Path) -> None:
    """With threading imported, 3.12 loses the OverflowError line of sys.exit(2**80)."""
    (tmp_path / "app.py").write_text("import sys; sys.exit(2**80)")
    native = python(["app.py"], tmp_path)
    sanitized = python(["-m", "mpsanitizer", "--fail-on-warning", "app.py"], tmp_path)
    assert (sanitized.returncode, sanitized.stderr) == (native.returncode, native.stderr)


WARNS_AS_ERROR = """
import multiprocessing as mp

def child(lock):
    pass

if __name__ == "__main__":
    proc = mp.get_context("fork").Process(target=child, args=(mp.get_context("spawn").Lock(),))
    try:
        proc.start()
    except Warning as warning:
        print("raised", type(warning).__name__)
    else:
        proc.join()
        print("started", proc.exitcode)
"""


@pytest.mark.parametrize("how", ["-W", "PYTHONWARNINGS"])
@both_ways
def test_a_warnings_filter_naming_our_category_takes_effect(tmp_path: Path, how: str) -> None:
    """CPython reads -W before mpsanitizer can be imported, and drops the option; it is
    applied when the sanitizer is enabled (by the runner, by MPSANITIZE)."""
    (tmp_path / "prog.py").write_text(WARNS_AS_ERROR)
    option = "error::mpsanitizer.ContextMixingWarning"
    runner = ["-m", "mpsanitizer", "prog.py"]
    if how == "-W":
        result = python(["-W", option, *runner], tmp_path)
        toggled = python(["-W", option, "prog.py"], tmp_path, env={"MPSANITIZE": "1"})
    else:
        result = python(runner, tmp_path, env={"PYTHONWARNINGS": option})
        toggled = python(["prog.py"], tmp_path, env={"PYTHONWARNINGS": option, "MPSANITIZE": "1"})
    assert (result.returncode, result.stdout) == (0, "raised ContextMixingWarning\n"), result.stderr
    assert (toggled.returncode, toggled.stdout) == (0, "raised ContextMixingWarning\n")
    assert python(["prog.py"], tmp_path).stdout == "started 0\n"


LIBRARY_START = """
import multiprocessing

def start(lock):  # a process library's pool, starting its worker for the user
    multiprocessing.get_context("spawn").Process(target=print, args=(lock,)).start()
"""

USES_THE_LIBRARY = """
import multiprocessing, importlib, sys

if __name__ == "__main__":
    lock = multiprocessing.get_context("fork").Lock()
    importlib.import_module(sys.argv[1]).start(lock)
"""


def _library(tmp_path: Path, module: str, source: str) -> None:
    """A module of a library's name beside the program, as if installed."""
    package = tmp_path.joinpath(*module.split(".")[:-1])
    package.mkdir(parents=True)
    for parent in [package, *package.parents]:
        if parent == tmp_path:
            break
        (parent / "__init__.py").write_text("")
    (package / f"{module.split('.')[-1]}.py").write_text(source)


LIBRARIES_STARTING = ["mpire.pool", "torch.utils.data.dataloader", "pathos.pools"]


@pytest.mark.parametrize("module", [*LIBRARIES_STARTING, "aiomultiprocess.core"])
def test_a_start_inside_a_process_library_is_the_programs_call_into_it(tmp_path, module) -> None:
    _library(tmp_path, module, LIBRARY_START)
    (tmp_path / "app.py").write_text(USES_THE_LIBRARY)
    result = python(["-m", "mpsanitizer", "app.py", module], tmp_path)
    assert result.returncode == 1
    assert "SUMMARY: mpsanitizer: context-mismatch app.py:5 -> app.py:6" in result.stderr


LIBRARY_LOCK = """
import multiprocessing

def get_lock():  # tqdm's: the lock its bars share, made on the program's first call
    return multiprocessing.get_context("fork").RLock()
"""

USES_THE_LIBRARYS_LOCK = """
import multiprocessing, importlib, sys

if __name__ == "__main__":
    lock = importlib.import_module(sys.argv[1]).get_lock()
    multiprocessing.get_context("spawn").Process(target=print, args=(lock,)).start()
"""


def test_a_primitive_a_library_makes_for_the_program_is_born_at_the_programs_call(
    tmp_path,
) -> None:
    _library(tmp_path, "tqdm.std", LIBRARY_LOCK)
    (tmp_path / "app.py").write_text(USES_THE_LIBRARYS_LOCK)
    result = python(["-m", "mpsanitizer", "app.py", "tqdm.std"], tmp_path)
    assert result.returncode == 1
    assert "SUMMARY: mpsanitizer: context-mismatch app.py:5 -> app.py:6" in result.stderr


NAMED_LIKE_THE_STANDARD_LIBRARY = ["json", "dataclasses", "inspect", "email", "glob", "wrapt"]
NAMED_LIKE_THE_STANDARD_LIBRARY += ["token"]  # linecache's, at the first primitive

STARTS_BESIDE_THEM = """
import multiprocessing, sys

if __name__ == "__main__":
    lock = multiprocessing.get_context(sys.argv[1]).Lock()  # a spawn Lock: fork starts checked
    child = multiprocessing.get_context(sys.argv[2]).Process(target=print, args=(lock,))
    child.start()
    child.join()
    import email, json  # the program's own modules, as without mpsanitizer
    print(child.exitcode, email.WHO, json.WHO)
"""


@both_ways
@pytest.mark.parametrize("activation", ["runner", "environment"])
def test_modules_beside_the_script_named_like_the_standard_library_stay_the_programs(
    tmp_path: Path, activation: str
) -> None:
    """wrapt and the checks load at the first start; the script's directory is first on
    sys.path then: what they import must not be the program's ``json.py``."""
    for name in NAMED_LIKE_THE_STANDARD_LIBRARY:
        (tmp_path / f"{name}.py").write_text(f"print('the program\\'s {name}')\nWHO = 'own'\n")
    (tmp_path / "app.py").write_text(STARTS_BESIDE_THEM)
    ours = ["-m", "mpsanitizer"] if activation == "runner" else []
    env = {"MPSANITIZE": "1"} if activation == "environment" else None
    native = python(["app.py", "spawn", "spawn"], tmp_path)
    assert native.stdout.endswith("0 own own\n"), native.stderr
    for methods in (["spawn", "spawn"], ["spawn", "fork"]):  # the second warns
        sanitized = python([*ours, "app.py", *methods], tmp_path, env=env)
        assert sanitized.stdout == native.stdout, sanitized.stderr
        assert "internal error" not in sanitized.stderr
    assert "ContextMixingWarning" in sanitized.stderr
    mismatch = python([*ours, "app.py", "fork", "spawn"], tmp_path, env=env)
    assert "SUMMARY: mpsanitizer: context-mismatch app.py:5 -> app.py:7" in mismatch.stderr
    assert "the program" not in mismatch.stdout + mismatch.stderr


CREATION_FAILS = """
import multiprocessing
queue = multiprocessing.Queue()  # not the first use: the patches are on
multiprocessing.Semaphore(-1)  # sem_open refuses: OSError
"""


@both_ways
@pytest.mark.parametrize("activation", ["runner", "environment"])
def test_a_primitive_that_cannot_be_made_fails_with_pythons_own_traceback(
    tmp_path: Path, activation: str
) -> None:
    (tmp_path / "app.py").write_text(CREATION_FAILS)
    native = python(["app.py"], tmp_path)
    if activation == "runner":
        sanitized = python(["-m", "mpsanitizer", "app.py"], tmp_path)
    else:
        sanitized = python(["app.py"], tmp_path, env={"MPSANITIZE": "1"})
    assert native.returncode == 1 and "Error" in native.stderr
    assert (sanitized.returncode, sanitized.stderr) == (native.returncode, native.stderr)
