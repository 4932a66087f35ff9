"""Switching the sanitizer on imports no multiprocessing module the program does not:
each one is instrumented when the program imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from mp_helpers import METHODS

MODULES = """
import json, sys
{enable}
import multiprocessing

def modules():  # and what wrapt 2 would import with asyncio
    names = ("multiprocessing", "ctypes", "_ctypes", "asyncio", "concurrent", "logging", "ssl")
    return sorted(m for m in sys.modules if m.startswith(names))

def child(lock, conn):
    conn.send(modules())

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    lock = ctx.Lock()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child, args=(lock, writer))
    proc.start()
    in_child = reader.recv()
    proc.join()
    print(json.dumps({{"parent": modules(), "child": in_child, "exitcode": proc.exitcode}}))
"""

ENABLE = "import mpsanitizer; mpsanitizer.enable()"


def run(
    tmp_path: Path, code: str, args: List[str], env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Run ``code`` as a script with ``args`` around it (``-m mpsanitizer`` before, the
    program's own after), with no MPSANITIZE variable but those of ``env``."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code))
    *before, after = args
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MPSANITIZE")}
    return subprocess.run(
        [sys.executable, *before, str(script), after],
        cwd=tmp_path, env={**full_env, **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["enable", "environment", "runner"])
def test_the_program_and_its_children_import_what_they_would_natively(
    tmp_path: Path, how: str, method: str
) -> None:
    native = run(tmp_path, MODULES.format(enable=""), [method])
    sanitized = run(
        tmp_path,
        MODULES.format(enable=ENABLE if how == "enable" else ""),
        ["-m", "mpsanitizer", method] if how == "runner" else [method],
        {"MPSANITIZE": "1"} if how == "environment" else None,
    )
    assert native.returncode == 0, native.stderr
    assert sanitized.returncode == 0, sanitized.stderr
    assert json.loads(sanitized.stdout) == json.loads(native.stdout)
    assert sanitized.stderr == native.stderr == ""


def test_modules_imported_after_enable_are_instrumented(tmp_path: Path) -> None:
    code = """
    import sys
    import mpsanitizer
    mpsanitizer.enable()
    print(sorted(m for m in sys.modules if m.startswith("multiprocessing")))
    import multiprocessing

    if __name__ == "__main__":
        fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
        for make in (fork.Lock, fork.Queue, lambda: fork.Value("i", 0)):
            try:
                spawn.Process(target=print, args=(make(),)).start()
            except mpsanitizer.ContextMismatchError as exc:
                print(exc.findings[0].object_type, exc.findings[0].origin)
    """
    result = run(tmp_path, code, ["spawn"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "Lock fork", "Queue fork", "Value fork"]


def test_without_ctypes_the_sanitizer_still_checks_what_can_exist(tmp_path: Path) -> None:
    # As on an interpreter built without libffi: only Value and Array need ctypes.
    code = """
    import sys
    sys.modules["_ctypes"] = None
    import mpsanitizer
    mpsanitizer.enable()
    import multiprocessing

    if __name__ == "__main__":
        fork = multiprocessing.get_context("fork")
        try:
            fork.Value("i", 0)
        except ImportError:
            print("Value: ImportError, as natively")
        try:
            multiprocessing.get_context("spawn").Process(target=print, args=(fork.Lock(),)).start()
        except mpsanitizer.ContextMismatchError:
            print("caught")
    """
    result = run(tmp_path, code, ["spawn"])
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["Value: ImportError, as natively", "caught"]


def test_disable_leaves_the_import_system_as_it_was(tmp_path: Path) -> None:
    code = """
    import sys
    before = list(sys.meta_path)
    import mpsanitizer
    mpsanitizer.enable()
    during = len(sys.meta_path)
    import multiprocessing.synchronize
    mpsanitizer.disable()
    print(during - len(before), sys.meta_path == before)
    """
    result = run(tmp_path, code, ["fork"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 True\n"


@pytest.mark.parametrize("how", ["environment", "runner"])
def test_a_fault_instrumenting_a_module_leaves_the_first_primitive_native(
    tmp_path: Path, how: str
) -> None:
    """The first primitive goes through a stand-in that puts the hooks in place; when
    that fails, the stand-in goes to CPython's own constructor (it once went to itself,
    without end: RecursionError)."""
    code = """
    import sys
    from mpsanitizer import hooks

    def broken(original):
        raise LookupError("no hook today")

    hooks.semlock_hook = broken
    import multiprocessing
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Lock  # imported before the first primitive

    if __name__ == "__main__":
        queue = Queue(ctx=multiprocessing.get_context(sys.argv[1]))
        queue.put("through")
        print(queue.get(), hasattr(queue._rlock, "_mpsanitizer_origin"))
    """
    done = run(
        tmp_path, code, ["-m", "mpsanitizer", "spawn"] if how == "runner" else ["spawn"],
        {"MPSANITIZE": "1"} if how == "environment" else None,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "through False\n"
    assert done.stderr == (
        "mpsanitizer: internal error while instrumenting multiprocessing.synchronize "
        "(LookupError: no hook today); continuing without this check\n"
    )
