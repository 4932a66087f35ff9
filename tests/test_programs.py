"""The three programs of the tutorial that started the project, run as real scripts
under ``python -m mpsanitizer``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def run(name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mpsanitizer", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES,
    )


def line_of(name: str, text: str) -> int:
    lines = (EXAMPLES / name).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def test_separate_contexts_are_silent() -> None:
    result = run("separate_contexts.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child: fork", "child: spawn", "parent: done"]
    assert result.stderr == ""


def test_fork_lock_to_spawn_child_is_an_error_naming_both_lines() -> None:
    name = "fork_lock_to_spawn.py"
    result = run(name)
    created, started = line_of(name, ".Lock()"), line_of(name, "child.start()")
    assert result.returncode == 1
    assert "child: got the lock" not in result.stdout
    err = result.stderr
    assert "mpsanitizer.ContextMismatchError: mpsanitizer: ERROR: context-mismatch" in err
    assert "Lock at args[0], created in a 'fork' context" in err
    assert f'fork_lock_to_spawn.py", line {created}, in main' in err
    assert f'fork_lock_to_spawn.py", line {started}, in main' in err
    assert "ctx = multiprocessing.get_context('spawn'); ctx.Lock(...)" in err
    assert err.rstrip().splitlines()[-2] == (
        f"SUMMARY: mpsanitizer: context-mismatch {name}:{created} -> {name}:{started}"
    )
    assert err.rstrip().splitlines()[-1].endswith(": 1 context-mismatch")
    assert "leaked semaphore" not in err


def test_spawn_lock_to_fork_child_warns_and_the_child_runs() -> None:
    name = "spawn_lock_to_fork.py"
    result = run(name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child: got the lock", "parent: child exited with 0"]
    assert "ContextMixingWarning: mpsanitizer: WARNING: context-mixing" in result.stderr
    assert "Lock at args[0], created in a 'spawn' context" in result.stderr
    created, started = line_of(name, ".Lock()"), line_of(name, "child.start()")
    assert f"SUMMARY: mpsanitizer: context-mixing {name}:{created} -> {name}:{started}" in (
        result.stderr
    )


DEFAULT_CONTEXT_PROGRAM = """
import multiprocessing, sys
import mpsanitizer

def work(lock):
    pass

if __name__ == "__main__":
    mpsanitizer.enable()
    lock = multiprocessing.Lock()           # the default context: fork on Linux up to 3.13
    multiprocessing.set_start_method(sys.argv[1], force=True)   # a library changes it later
    try:
        multiprocessing.Process(target=work, args=(lock,)).start()
    except mpsanitizer.ContextMismatchError as exc:
        f = exc.findings[0]
        print(f.process_class, f.origin, f.target, f.path)
    try:
        multiprocessing.Pool(1, initargs=(None, lock))
    except mpsanitizer.ContextMismatchError as exc:
        f = exc.findings[0]
        print(f.via, f.origin, f.target, f.path)
"""


def test_default_context_changed_after_creation(tmp_path) -> None:
    """Plain multiprocessing.Process and Pool take the start method in force at start time."""
    script = tmp_path / "default_context.py"
    script.write_text(DEFAULT_CONTEXT_PROGRAM)
    for method in ("spawn", "forkserver"):
        result = subprocess.run(
            [sys.executable, str(script), method], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"Process fork {method} args[0]",
            f"Pool fork {method} initargs[1]",
        ]
