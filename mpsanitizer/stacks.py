"""Cheap stack capture on the hot path, formatting only when a report is made."""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass
from types import CodeType
from typing import Dict, List, Optional, Tuple

RawStack = Tuple[Tuple[CodeType, int], ...]


@dataclass(frozen=True)
class Frame:
    """One formatted frame: what a report and a JSON record show."""

    filename: str
    lineno: int
    function: str

    @property
    def source(self) -> str:
        return linecache.getline(self.filename, self.lineno).strip()

    def as_dict(self) -> Dict[str, object]:
        return {"file": self.filename, "line": self.lineno, "function": self.function}


def _package_dir(module_file: Optional[str]) -> Optional[str]:
    return os.path.dirname(os.path.abspath(module_file)) + os.sep if module_file else None


def _internal_dirs() -> Tuple[str, ...]:
    import multiprocessing

    wrapt = sys.modules.get("wrapt")
    stdlib = os.path.dirname(os.path.dirname(os.path.abspath(multiprocessing.__file__)))
    dirs = [
        _package_dir(multiprocessing.__file__),
        os.path.join(stdlib, "concurrent", "futures") + os.sep,
        _package_dir(getattr(wrapt, "__file__", None)),
        _package_dir(__file__),
    ]
    return tuple(d for d in dirs if d)


_INTERNAL_DIRS: Tuple[str, ...] = ()
STOP_CODES: Dict[int, CodeType] = {}  # by id: frames below the user's program (the runner's exec)
# Keyed by id(): hashing a code object hashes its bytecode and constants, every time.
_internal_cache: Dict[int, Tuple[CodeType, bool]] = {}


def is_internal(code: CodeType) -> bool:
    """True for frames of multiprocessing, concurrent.futures, wrapt and mpsanitizer."""
    try:
        return _internal_cache[id(code)][1]
    except KeyError:
        global _INTERNAL_DIRS
        if not _INTERNAL_DIRS:
            _INTERNAL_DIRS = _internal_dirs()
        filename = code.co_filename
        if not os.path.isabs(filename):
            filename = os.path.abspath(filename)
        internal = filename.startswith(_INTERNAL_DIRS)
        _internal_cache[id(code)] = (code, internal)  # the code is kept: its id stays unique
        return internal


def capture(depth: int, skip: int = 1) -> RawStack:
    """Return up to ``depth`` raw frames, innermost first, starting at the
    first frame outside multiprocessing and mpsanitizer."""
    try:
        frame = sys._getframe(skip + 1)
    except ValueError:
        return ()
    while frame is not None and is_internal(frame.f_code):
        frame = frame.f_back
    out: List[Tuple[CodeType, int]] = []
    while frame is not None and len(out) < depth and id(frame.f_code) not in STOP_CODES:
        out.append((frame.f_code, frame.f_lasti))  # f_lineno would compute a line now
        frame = frame.f_back
    return tuple(out)


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
    """Turn a raw stack into frames, outermost first (most recent call last)."""
    return [
        Frame(code.co_filename, line_of(code, lasti), code.co_name) for code, lasti in reversed(raw)
    ]


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
