"""The user's program, run as ``python`` would run it: its ``__main__`` module (script,
directory, zip application, standard input, ``-m`` module or ``-c`` code), its code,
and its uncaught exception shown through ``sys.excepthook`` without our frames.

Spawn and forkserver children re-import the script, not us, as ``__mp_main__``.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.machinery
import importlib.util
import io
import os
import signal
import sys
import types

from . import stacks
from .usage import UsageError, say

TYPE_CHECKING = False
if TYPE_CHECKING:  # the program may have a typing.py of its own: python would not import ours
    from typing import List, Optional, Tuple


def _fresh_main(**attrs: object) -> types.ModuleType:
    module = types.ModuleType("__main__")
    if "__annotations__" in vars(sys.modules["__main__"]):
        attrs["__annotations__"] = {}  # python's __main__ starts with it (3.9-3.13)
    module.__dict__.update(attrs, __builtins__=builtins)
    sys.modules["__main__"] = module
    if "__mp_main__" in sys.modules:
        # multiprocessing is imported already and aliased it to our __main__; its import
        # does that itself later, and before then python has no __mp_main__.
        sys.modules["__mp_main__"] = module
    return module


def _find_spec(name: str) -> Optional[importlib.machinery.ModuleSpec]:
    """The spec of module ``name``, or None where runpy reports an error finding it."""
    parent = name.rpartition(".")[0]
    if parent:
        # Import the parent first, as runpy does: an error of its own code is the program's.
        try:
            __import__(parent)
        except ImportError as exc:
            if exc.name is None or (exc.name != parent and not parent.startswith(exc.name + ".")):
                raise
    try:
        return importlib.util.find_spec(name)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None  # a missing parent, or a parent that is not a package


class NotCompiled(Exception):
    """The program does not compile. ``rerun``: the arguments with which ``python`` itself
    can report it, when nothing of the program has run yet, else None."""

    def __init__(self, error: Exception, rerun: Optional[List[str]]) -> None:
        super().__init__(error)
        self.error, self.rerun = error, rerun


def _compile(source: str | bytes, filename: str, rerun: Optional[List[str]]) -> types.CodeType:
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, before 3.11
        raise NotCompiled(exc, rerun) from None


def _get_code(spec: importlib.machinery.ModuleSpec, rerun: Optional[List[str]]) -> types.CodeType:
    try:
        code = spec.loader.get_code(spec.name)  # type: ignore[union-attr]
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except (SyntaxError, ValueError) as exc:
        raise NotCompiled(exc, rerun) from None
    if code is None:
        raise UsageError(f"no code object available for {spec.name}")
    return code


def rerun_natively(args: List[str]) -> None:
    """Become ``python [this interpreter's options] args``, which reports a program that
    does not compile exactly as it would without us: CPython compiles a script from the
    open file, and on 3.9 that gives other line numbers than any compile() of its bytes.
    Returns only when that is impossible."""
    from .relaunch import interpreter_flags

    if not sys.executable:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        os.execv(sys.executable, [sys.executable, *interpreter_flags(), *args])


def _set_path0(entry: str, always: bool = False) -> None:
    """Put ``entry`` where python puts the program's directory: in place of the current
    directory that ``-m mpsanitizer`` put first, and with -I or -P (safe path) only for a
    directory or zip file (``always``)."""
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        sys.path[0] = entry
    elif always:
        sys.path.insert(0, entry)


def _script_directory(path: str) -> str:
    """``sys.path[0]`` for a script, as CPython computes it: the script's own symbolic link
    read once, then the real path where there is one (``/dev/stdin`` has none: its
    directory stays ``/proc/self/fd``), then its directory."""
    try:
        link = os.readlink(path)
        path = link if os.path.isabs(link) else os.path.join(os.path.dirname(path), link)
    except OSError:
        pass
    real = os.path.realpath(path)
    return os.path.dirname(real if os.path.exists(real) else path)


def _importer(entry: str) -> object:
    """The finder a sys.path entry gets (a directory's, a zip file's), or None for a
    plain file: what CPython asks to tell a script from a directory or zip application."""
    if entry not in sys.path_importer_cache:
        finder = None
        for hook in sys.path_hooks:
            try:
                finder = hook(entry)
                break
            except ImportError:
                continue
        sys.path_importer_cache[entry] = finder
    return sys.path_importer_cache[entry]


def _main_from_spec(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    return _fresh_main(
        __file__=spec.origin, __spec__=spec, __loader__=spec.loader,
        __package__=spec.parent, __cached__=spec.cached,
    )  # fmt: skip


def _from_stdin(args: List[str]) -> Tuple[types.CodeType, types.ModuleType]:
    """``python -`` with the program on a pipe or file (a terminal gets python's prompt,
    which we do not offer)."""
    try:
        if sys.stdin.isatty():
            raise UsageError("- reads the program from standard input, which is a terminal")
        source = sys.stdin.buffer.read()
    except (AttributeError, OSError, ValueError) as exc:
        raise UsageError(f"cannot read the program from standard input: {exc}") from None
    sys.argv = ["-", *args]
    _set_path0("")
    # python reads and compiles it from the stream, which is now consumed: no rerun
    return _compile(source, "<stdin>", rerun=None), _fresh_main(
        __file__="<stdin>", __cached__=None, __spec__=None,
        __loader__=importlib.machinery.BuiltinImporter, __package__=None,
    )  # fmt: skip


def prepare(kind: str, target: str, args: List[str]) -> Tuple[types.CodeType, types.ModuleType]:
    """Build ``__main__`` and its code the way the interpreter would."""
    if kind == "-c":
        sys.argv = ["-c", *args]
        _set_path0("")
        code = _compile(target, "<string>", rerun=["-c", target, *args])
        if sys.version_info >= (3, 13):  # as python does from 3.13: tracebacks show -c lines
            import linecache

            source = target + "\n"  # python's -c source ends with the newline it appends
            lines = [line + "\n" for line in source.splitlines()]
            linecache.cache["<string>"] = (len(source), None, lines, "<string>")
        return code, _fresh_main(
            __spec__=None, __loader__=importlib.machinery.BuiltinImporter, __package__=None
        )
    if kind == "-m":
        sys.argv = ["-m", *args]  # what parent packages see as they are imported, as in python
        spec = _find_spec(target)
        if spec is None:
            raise UsageError(f"no module named {target}")
        if spec.submodule_search_locations is not None:
            spec = _find_spec(target + ".__main__")
            if spec is None:
                raise UsageError(f"no module named {target}.__main__; {target} is a package")
        if spec.loader is None or not hasattr(spec.loader, "get_code"):
            raise UsageError(f"cannot run module {target}")
        # a dotted name ran the code of its parent packages already: python must not again
        code = _get_code(spec, rerun=None if "." in spec.name else ["-m", target, *args])
        sys.argv = [spec.origin or target, *args]
        return code, _main_from_spec(spec)
    if target == "-":
        return _from_stdin(args)
    path = os.path.join(os.getcwd(), target)  # absolute as python makes it: not normalized
    if (os.path.isdir(path) or os.path.isfile(path)) and _importer(path) is not None:
        # A directory or a zip file runs its __main__ module, found on sys.path[0].
        spec = importlib.machinery.PathFinder.find_spec("__main__", [path])
        if spec is None or spec.loader is None:
            raise UsageError(f"can't find '__main__' module in {target!r}")
        sys.argv = [target, *args]
        _set_path0(path, always=True)
        return _get_code(spec, rerun=[target, *args]), _main_from_spec(spec)
    try:
        with io.open_code(path) as handle:
            source = handle.read()
    except FileNotFoundError:
        raise UsageError(f"can't open file {target!r}: no such file") from None
    except OSError as exc:
        raise UsageError(f"can't open file {target!r}: {exc.strerror}") from None
    sys.argv = [target, *args]
    _set_path0(_script_directory(path))
    code = _compile(source, path, rerun=[target, *args])
    loader = importlib.machinery.SourceFileLoader("__main__", path)
    return code, _fresh_main(
        __file__=path, __spec__=None, __loader__=loader, __package__=None, __cached__=None
    )


def _user_traceback(tb: Optional[types.TracebackType]) -> Optional[types.TracebackType]:
    ours = os.path.dirname(__file__) + os.sep  # the runner's frames, and this module's
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    return tb


def _display(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        sys.__excepthook__(type(exc), exc, exc.__traceback__)


def report(exc: BaseException) -> None:
    """Show an uncaught exception as the interpreter does: through ``sys.excepthook``,
    and when that fails or is missing, the way CPython's PyErr_Print says so."""
    exc.__traceback__ = _user_traceback(exc.__traceback__)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    hook = getattr(sys, "excepthook", None)
    if hook is None:
        say("sys.excepthook is missing")
        _display(exc)
        return
    try:
        hook(type(exc), exc, exc.__traceback__)
    except SystemExit:
        raise
    except BaseException as hook_error:
        hook_error.__traceback__ = _user_traceback(hook_error.__traceback__)
        say("Error in sys.excepthook:")
        _display(hook_error)
        say("\nOriginal exception was:")
        _display(exc)


def run(code: types.CodeType, module: types.ModuleType) -> int:
    """Execute like the interpreter: exit status, excepthook, SIGINT semantics."""
    try:
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        error = exc
    else:
        return 0
    report(error)  # outside the handler, as python calls the hook: nothing is being handled
    if type(error) is KeyboardInterrupt:  # exactly: python exits 1 for a subclass
        global _interrupted
        _interrupted = True  # die of SIGINT once the interpreter has finalized, as python does
        return 128 + signal.SIGINT
    return 1


_interrupted = False


def exit_by_sigint_if_interrupted() -> None:
    """Registered with atexit before the program runs, so that it runs after the program's
    own handlers and multiprocessing's cleanup: CPython re-raises SIGINT at the very end."""
    if not _interrupted:
        return
    _flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def exit_now(status: int) -> None:
    """Exit with ``status`` from the last atexit handler, where SystemExit is ignored."""
    _flush()
    os._exit(status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


stacks.STOP_CODES[id(run.__code__)] = run.__code__
