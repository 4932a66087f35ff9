"""Cheap stack capture on the hot path, formatting only when a report is made."""

from __future__ import annotations

import linecache
import os
import sys
from collections import namedtuple
from types import CodeType

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Callable, Dict, List, Optional, Set, Tuple


if TYPE_CHECKING:
    # Innermost first, flat: [code, lasti, code, lasti, ...]. Lines: only for reports.
    RawStack = List[object]
    RawCapture = Callable[..., List[object]]


class Frame(namedtuple("Frame", ("filename", "lineno", "function"))):
    """One formatted frame (``filename``, ``lineno``, ``function``): what a report and a
    JSON record show."""

    __slots__ = ()

    @property
    def source(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def as_dict(self) -> Dict[str, object]:
        return {"file": self.filename, "line": self.lineno, "function": self.function}


STOP_CODES: Dict[int, CodeType] = {}  # by id: frames below the user's program (the runner's exec)
# Directories whose frames are below the user's program (pytest's, in a test session).
STOP_DIRS: List[str] = []


def stop_at_packages(*names: str) -> None:
    """Stacks end where a frame of one of these imported packages begins."""
    for name in names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            directory = os.path.dirname(os.path.abspath(path)) + os.sep
            if directory not in STOP_DIRS:
                STOP_DIRS.append(directory)


# Frames of these are not the user's: multiprocessing and ours, and the libraries whose job
# is to start processes for the user (their frames would hide the user's call).
_INTERNAL_PACKAGES = (
    *("multiprocessing", "concurrent.futures", "wrapt", "mpsanitizer", "threading"),
    *("multiprocess", "billiard"),  # copies of multiprocessing (flavours.py)
    *("joblib", "loky", "pebble", "torch.multiprocessing", "torch.utils.data", "mpire"),
    *("pathos", "aiomultiprocess"),
    "tqdm",  # its lock, made by the program's tqdm.get_lock(); its process_map
    "asyncio",  # loop.run_in_executor(executor, ...): the program's await is the start
)
_internal_modules: Dict[Optional[str], bool] = {None: False}
# 3.12+: a frame's module name without making a frame object for it (3.11 makes them lazily).
_module_name: Optional[Callable[[int], Optional[str]]] = getattr(sys, "_getframemodulename", None)


def _module_is_internal(name: Optional[str]) -> bool:
    """Frames of the internal packages (and of the hooks, generated with their
    constructor's module name) are not the user's."""
    internal = _internal_modules.get(name)
    if internal is None:
        internal = isinstance(name, str) and any(
            name == p or name.startswith(p + ".") for p in _INTERNAL_PACKAGES
        )
        if len(_internal_modules) < 10_000:
            _internal_modules[name] = internal
    return internal


# Whether the module ``name`` is internal: a dict read, and the full rule only once per name.
_JUDGE = """\
internal = _known_module(name)
if internal is None:
    internal = _module_is_internal(name)"""

# _getframemodulename() gives the function's __module__, which functools.wraps copies (a
# library's wrapper of a user function says "__main__"): a frame it calls the user's is
# confirmed by its globals, the module its code runs in.
_FIND_BY_MODULE = """\
    depth = skip + 1
    try:
        while True:
            name = _module_name(depth)
{judge12}
            if not internal:
                f = _getframe(depth)
                name = f.f_globals.get("__name__")
{judge16}
                if not internal:
                    break
            depth += 1
    except ValueError:
        return [{head}]
    c0 = f.f_code
"""
_FIND_BY_GLOBALS = """\
    try:
        f = _getframe(skip + 1)
    except ValueError:
        return [{head}]
    while True:
        name = f.f_globals.get("__name__")
{judge8}
        if not internal:
            break
        f = f.f_back
        if f is None:
            return [{head}]
    c0 = f.f_code
"""
_JUDGED = {f"judge{n}": "\n".join(" " * n + x for x in _JUDGE.splitlines()) for n in (8, 12, 16)}

_capturers: Dict[Tuple[object, ...], RawCapture] = {}


def capturer(depth: int, head: Tuple[str, ...] = (), **names: object) -> RawCapture:
    """A function ``capture(skip, *head)`` returning ``[*head, code, lasti, ...]``: up to
    ``depth`` frames, innermost first, from the first frame outside multiprocessing and
    mpsanitizer at or above the one ``skip`` calls up from its caller (0: the caller).

    It runs on every primitive's creation, so it is generated as straight-line code, as
    :mod:`dataclasses` generates ``__init__``: a loop and separate calls to find the
    frame and to build the record cost half again as much. ``head`` names leading items
    of the record; they are expressions over the parameters of the same names and
    ``names``. It keeps code objects and instruction offsets; a line would be computed now.
    """
    key = (depth, head, tuple(sorted((name, id(value)) for name, value in names.items())))
    try:
        return _capturers[key]
    except KeyError:
        pass
    params = [name for name in head if name.isidentifier()]
    items = list(head)
    find = _FIND_BY_MODULE if _module_name is not None else _FIND_BY_GLOBALS
    lines = [f"def capture(skip{''.join(', ' + p for p in params)}):"]
    lines += find.format(head=", ".join(items), **_JUDGED).splitlines()
    for i in range(depth):
        if i:
            lines += ["    f = f.f_back", f"    if f is None: return [{', '.join(items)}]"]
            lines.append(f"    c{i} = f.f_code")
        lines.append(f"    l{i} = f.f_lasti")
        items += [f"c{i}", f"l{i}"]
    lines.append(f"    return [{', '.join(items)}]")
    namespace: Dict[str, object] = {
        "__name__": __name__,  # its frames count as ours, by module name too
        "_module_name": _module_name,
        "_known_module": _internal_modules.get,
        "_module_is_internal": _module_is_internal,
        "_getframe": sys._getframe,
        **names,
    }
    source = "\n".join(lines)
    exec(compile(source, f"<mpsanitizer capture of {depth} frames>", "exec"), namespace)
    capture = namespace["capture"]
    if len(_capturers) < 1000:
        _capturers[key] = capture  # type: ignore[assignment]
    return capture  # type: ignore[return-value]


def record_capturer(
    depth: int, composite: bool, tracker: object, next_serial: Callable[[], int]
) -> Optional[RawCapture]:
    """``make(skip, method)`` of :mod:`mpsanitizer.origins` from the optional C extension:
    the record :func:`capturer` makes with the head ``(method, tracker.pid, serial)``
    (``~serial`` for a composite), in a quarter of the time; None without the extension."""
    from . import extension

    native = extension.get()
    if native is None:
        return None
    try:
        made = native.Capturer(
            depth, composite, tracker, next_serial, _internal_modules, _module_is_internal
        )
    except Exception:  # a build of another version of this file: the Python capture
        return None
    return made.capture  # type: ignore[no-any-return]


def capture(depth: int, skip: int = 1) -> RawStack:
    """The user's stack, from the first user frame at or above the caller's caller
    (``skip`` = 1) or further up."""
    return capturer(depth)(skip + 1)


def line_of(code: CodeType, lasti: int) -> int:
    """The line of the instruction at byte offset ``lasti``."""
    if hasattr(code, "co_lines"):  # 3.10+
        for start, end, line in code.co_lines():
            if start <= lasti < end and line is not None:
                return line
        return code.co_firstlineno
    import dis

    line = code.co_firstlineno
    for offset, start_line in dis.findlinestarts(code):
        if offset > lasti:
            break
        line = start_line
    return line


def resolve(raw: RawStack) -> List[Frame]:
    """Turn a raw stack into frames, outermost first (most recent call last). Frames
    from the runner's own ``exec`` down (or pytest's, in a test session) are not the
    user's and are dropped."""
    frames: List[Frame] = []
    process_codes = _process_codes()
    stop_dirs = tuple(STOP_DIRS)
    for i in range(0, len(raw) - 1, 2):
        code, lasti = raw[i], raw[i + 1]
        if id(code) in STOP_CODES or code in process_codes:
            break
        if stop_dirs and code.co_filename.startswith(stop_dirs):  # type: ignore[union-attr]
            break
        frames.append(Frame(code.co_filename, line_of(code, lasti), code.co_name))  # type: ignore[arg-type,union-attr]
    frames.reverse()
    return frames


def _process_codes() -> Set[CodeType]:
    """The code of ``BaseProcess.run`` and ``_bootstrap`` (of every package): in a child,
    what lies outside them is how the process began (``spawn_main``, or the parent's own
    stack copied by fork), not the program's stack."""
    from . import flavours

    return {
        getattr(cls, name).__code__
        for cls in flavours.classes("process", "BaseProcess")
        for name in ("run", "_bootstrap")
    }


def format_frames(frames: List[Frame], indent: str = "  ") -> List[str]:
    lines = []
    for frame in frames:
        lines.append(f'{indent}File "{frame.filename}", line {frame.lineno}, in {frame.function}')
        source = frame.source
        if source:
            lines.append(f"{indent}  {source}")
    return lines


def short_location(frames: List[Frame]) -> str:
    """``app.py:12`` for the most recent frame, relative to the working directory."""
    if not frames:
        return "?"
    frame = frames[-1]
    name = frame.filename
    try:
        rel = os.path.relpath(name)
        if not rel.startswith(".."):
            name = rel
    except ValueError:
        pass
    return f"{name}:{frame.lineno}"
