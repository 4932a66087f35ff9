"""The wrapper of ``reduction.dump``, whose frame reads as ``reduction.dump``'s own.

A spawn or forkserver start that fails to pickle (a lambda target, an open file in the
arguments) is the most common multiprocessing error there is, and its traceback ends in
``reduction.py``, ``line 60, in dump``, at ``ForkingPickler(file, protocol).dump(obj)``.
Under the sanitizer the process is pickled by the scanning pickler instead, in a frame
of ours: this function is compiled with ``reduction.dump``'s file name, first line and
name, every instruction on the line of its pickling call, and that call spelled and
placed as CPython's, so the traceback is CPython's to the character (3.11+ carets
included). Frames of ours below it (a tracked object's reducer) are cut from a native
error before it goes on. Where ``dump`` is not CPython's (a copy of multiprocessing with
another signature) the same code is compiled under a name of its own.

The wrapper's arguments are wrapt's: ``(wrapped, instance, args, kwargs)``.
"""

from __future__ import annotations

import ast
import functools
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, TracebackType
    from typing import Any, Callable, Dict, Optional, Tuple

CALL = "ForkingPickler(file, protocol).dump(obj)"  # reduction.dump's body, 3.9 to 3.13
_VARARGS, _VARKEYWORDS = 0x04, 0x08  # code flags

_TEMPLATE = f"""
def dump(_mps_wrapped, _mps_instance, _mps_args, _mps_kwargs):
    _mps_scan = _mps_begin(_mps_wrapped, _mps_args, _mps_kwargs)
    if _mps_scan is None:
        _mps_plain = _mps_as_is(_mps_args, _mps_kwargs)
        if _mps_plain is None:
            return _mps_wrapped(*_mps_args, **_mps_kwargs)
        ForkingPickler, obj, file, protocol = _mps_plain
        {CALL}
        return
    ForkingPickler, obj, file, protocol = _mps_scan.scanning()
    try:
        try:
            {CALL}
        except BaseException as _mps_native:
            _mps_error = _mps_scan.failed(_mps_native)
            if _mps_error is not None:
                raise _mps_error
            if _mps_scan.again:
                ForkingPickler, obj, file, protocol = _mps_scan.native()
                {CALL}
                return
            raise
        _mps_error = _mps_scan.succeeded()
        if _mps_error is not None:
            raise _mps_error
        if _mps_scan.again:
            ForkingPickler, obj, file, protocol = _mps_scan.native()
            {CALL}
    finally:
        _mps_scan.end()
"""

_made: Dict[int, Tuple[Any, Callable]] = {}  # id(original) -> (original, wrapper)


def dump_hook(original: Callable, begin: Callable) -> Callable:
    """The wrapt wrapper for ``original`` (a ``reduction.dump``). ``begin(wrapped, args,
    kwargs)`` returns None when the call is no process start, else the start's scan (see
    :class:`mpsanitizer.handoff.DumpScan`)."""
    made = _made.get(id(original))
    if made is not None and made[0] is original and made[1].__globals__["_mps_begin"] is begin:
        return made[1]
    tree = ast.parse(_TEMPLATE)
    where = _native_place(original)
    filename = "<mpsanitizer: reduction.dump>"
    as_is: Callable[..., Any] = _not_inline
    if where is not None:
        filename, first, line, indent = where
        _relocate(tree, first, line, indent)
        as_is = functools.partial(_inline, sys.modules[original.__module__])
    namespace: Dict[str, Any] = {
        "__name__": getattr(original, "__module__", None) or __name__,
        "_mps_begin": begin,
        "_mps_as_is": as_is,
    }
    exec(compile(tree, filename, "exec"), namespace)
    wrapper = namespace["dump"]
    _made[id(original)] = (original, wrapper)
    return wrapper  # type: ignore[no-any-return]


def _inline(reduction: Any, args: tuple, kwargs: Dict[str, Any]) -> Optional[Tuple[Any, ...]]:
    """(ForkingPickler, obj, file, protocol) for a dump that is no start: CPython's body
    runs in the wrapper's frame, with no second ``dump`` frame under it."""
    try:
        return (reduction.ForkingPickler, *arguments(*args, **kwargs))
    except TypeError:
        return None  # called wrongly: CPython's own dump says so


def arguments(obj: Any, file: Any, protocol: Any = None) -> Tuple[Any, Any, Any]:
    """``reduction.dump``'s arguments, bound as it binds them."""
    return obj, file, protocol


def _not_inline(args: tuple, kwargs: Dict[str, Any]) -> None:
    return None


def _native_place(original: Callable) -> Optional[Tuple[str, int, int, int]]:
    """(file name, first line, line of the pickling call, its column) of CPython's
    ``reduction.dump``, or None when ``original`` is not shaped as that one is."""
    code: Optional[CodeType] = getattr(original, "__code__", None)
    if (
        code is None
        or code.co_argcount != 3
        or code.co_kwonlyargcount
        or code.co_flags & (_VARARGS | _VARKEYWORDS)  # multiprocess's takes *args, **kwds
        or code.co_varnames[:3] != ("obj", "file", "protocol")
        or code.co_names != ("ForkingPickler", "dump")
        or getattr(sys.modules.get(original.__module__), "dump", None) is None
    ):
        return None
    lines = _lines(code)
    if len(lines) != 1:
        return None
    line = lines.pop()
    indent = 4
    positions = getattr(code, "co_positions", None)  # 3.11+: the call's own columns
    if positions is not None:
        columns = [p[2] for p in positions() if p[0] == line and p[2] is not None]
        indent = min(columns, default=indent)
    return code.co_filename, code.co_firstlineno, line, indent


def _lines(code: CodeType) -> set:
    """The lines that have instructions, after the ``def`` line (3.11+'s RESUME is on it)."""
    lines_of = getattr(code, "co_lines", None)
    if lines_of is not None:
        found = {line for _, _, line in lines_of() if line is not None}
    else:  # 3.9: the line number table, pairs of (bytecode step, line step)
        table, line, found = code.co_lnotab, code.co_firstlineno, set()
        for i in range(0, len(table), 2):
            step = table[i + 1]
            line += step - 256 if step >= 128 else step
            found.add(line)
    found.discard(code.co_firstlineno)
    return found


def _relocate(tree: ast.Module, first: int, line: int, indent: int) -> None:
    """Put every instruction on ``line``: each pickling call at ``indent``, as CPython's,
    and everything else across the whole call, so that no caret marks any of it."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Expr) and _is_call(n.value)]
    shift = {id(n): indent - call.col_offset for call in calls for n in ast.walk(call)}
    width = indent + len(CALL)
    for node in ast.walk(tree):
        if not hasattr(node, "lineno"):
            continue
        node.lineno = node.end_lineno = line  # type: ignore[attr-defined]
        by = shift.get(id(node))
        if by is None:
            node.col_offset, node.end_col_offset = indent, width  # type: ignore[attr-defined]
        else:
            node.col_offset += by  # type: ignore[attr-defined]
            node.end_col_offset += by  # type: ignore[attr-defined]
    tree.body[0].lineno = first  # type: ignore[attr-defined]


def _is_call(node: ast.expr) -> bool:
    """Whether ``node`` is the pickling call, ``ForkingPickler(...).dump(obj)``."""
    func = getattr(node, "func", None)
    return isinstance(func, ast.Attribute) and func.attr == "dump"


_OURS = (os.path.dirname(os.path.abspath(__file__)) + os.sep, "<mpsanitizer")


def cut_our_frames(exc: BaseException) -> None:
    """Unlink the traceback entries of our frames below the first one (the wrapper's):
    the error reads as CPython's own."""
    tb: Optional[TracebackType] = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        following = tb.tb_next
        if following.tb_frame.f_code.co_filename.startswith(_OURS):
            tb.tb_next = following.tb_next
        else:
            tb = following
