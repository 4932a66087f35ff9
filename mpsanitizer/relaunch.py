"""The runner's usual way: become ``python [flags] program`` itself, sanitized by the
``mpsanitizer.pth`` line from the environment, so the program runs exactly as under
``python``: same frames (``inspect.stack()``, ``warnings.warn(stacklevel=...)``, tracebacks),
same modules, same pid.

The in-process runner of :mod:`mpsanitizer.program` remains for what a new interpreter
would lose: a tracer or profiler around the runner (coverage, pdb, cProfile), an
interpreter that does not process our ``.pth``, and ``--fail-on-warning``, which needs the
program's exit status.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .lazy import RUNNER  # the pid of the process the runner becomes, which sums up
from .lazy import command_line as _command_line

TYPE_CHECKING = False
if TYPE_CHECKING:  # the program may have a typing.py of its own: python would not import ours
    from typing import Dict, List


_MODULE_NAMES = ("mpsanitizer", "mpsanitizer.__main__")


def interpreter_flags() -> List[str]:
    """This interpreter's own options (``-X dev``, ``-W error``, ``-I``...), as given: from
    the command line python keeps (3.10+) or the kernel's record of it (3.9, Linux), else
    rebuilt from ``sys.flags``."""
    argv = _command_line()
    for i, arg in enumerate(argv[1:], 1):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m") and arg[2:] in _MODULE_NAMES:  # -mmpsanitizer
            return list(argv[1:i])
        if arg[:1] == "-" and arg[1:2] != "-" and arg[-1:] == "m" and following in _MODULE_NAMES:
            return [*argv[1:i], *([arg[:-1]] if arg != "-m" else [])]  # -m, or -Bm mpsanitizer
    return _flags_from_state()


def _flags_from_state() -> List[str]:
    """3.9: the options rebuilt from what they set. multiprocessing's own rebuilding
    (``-B``, ``-O``, ``-W``, ``-I``, some ``-X``...) plus what it leaves out: ``-i``,
    ``-u``, every other ``-X`` and ``--check-hash-based-pycs``."""
    import _imp
    import io
    import subprocess

    flags = list(getattr(subprocess, "_args_from_interpreter_flags", list)())
    if sys.flags.inspect and not os.environ.get("PYTHONINSPECT"):
        flags.append("-i")
    stdout_buffer = getattr(sys.__stdout__, "buffer", None)
    if isinstance(stdout_buffer, io.FileIO) and not os.environ.get("PYTHONUNBUFFERED"):
        flags.append("-u")  # only -u leaves stdout without a buffer
    given = {flags[i + 1].partition("=")[0] for i, flag in enumerate(flags[:-1]) if flag == "-X"}
    for name, value in getattr(sys, "_xoptions", {}).items():
        if name not in given:
            flags += ["-X", name if value is True else f"{name}={value}"]
    mode = getattr(_imp, "check_hash_based_pycs", "default")
    if mode != "default":
        flags += ["--check-hash-based-pycs", mode]
    return flags


_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def _started_as_the_program(argv: List[str]) -> bool:
    """Whether python's command line runs us as its program (``python -X dev -m
    mpsanitizer``), not another tool that runs us (``python -m pdb -m mpsanitizer``).
    An unreadable command line says yes."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _WITH_VALUE:
            i += 2
            continue
        if arg[:1] != "-" or arg == "-":
            return False  # a script
        if arg[:2] != "--":
            for j, letter in enumerate(arg[1:], 2):
                if letter in "WX":
                    i += j == len(arg)  # -bW error: its value is the next argument
                    break  # else the rest is its value
                if letter == "c":
                    return False
                if letter == "m":
                    name = arg[j:] or (argv[i + 1] if i + 1 < len(argv) else "")
                    return name in _MODULE_NAMES
        i += 1
    return not argv


def _argv0() -> str:
    """What python was called as (``python3``, found on PATH), for the process to keep
    its name: ``sys.orig_argv[0]`` or, on 3.9, the kernel's record of it."""
    argv = _command_line()
    return (argv[0] if argv else "") or sys.executable


def possible() -> bool:
    """Whether a new interpreter with these flags would activate us and lose nothing."""
    if not sys.executable or not hasattr(os, "execv") or sys.flags.no_site:
        return False
    if not _started_as_the_program(_command_line()):  # pdb's, say: it would lose its session
        return False
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return False
    monitoring = getattr(sys, "monitoring", None)  # 3.12+: coverage's sysmon core, debuggers
    if monitoring is not None and any(monitoring.get_tool(i) for i in range(6)):
        return False
    site = sys.modules.get("site")
    if site is None:
        return False
    try:
        dirs = list(site.getsitepackages())
        if site.ENABLE_USER_SITE:
            dirs.append(site.getusersitepackages())
    except Exception:
        return False
    return any(os.path.isfile(os.path.join(d, "mpsanitizer.pth")) for d in dirs)


def become(program: List[str], environment: Dict[str, str]) -> None:
    """Replace this process with ``python [flags] *program`` under ``environment``.
    Returns only when that is impossible."""
    os.environ.update(environment)
    os.environ[RUNNER] = str(os.getpid())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        os.execv(sys.executable, [_argv0(), *interpreter_flags(), *program])
    del os.environ[RUNNER]
