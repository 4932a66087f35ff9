"""Bounded walks over what a child process receives.

Used where nothing is pickled (fork children), and to name the path of an
offender that the pickling scan found (``args[0]``, ``kwargs['cfg'].queue``,
``initargs[1]``, ``self._record``).
"""

from __future__ import annotations

import contextlib
import functools
import types
from multiprocessing import process
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

ATOMIC = frozenset(
    {int, float, complex, bool, str, bytes, bytearray, type(None), range, type(Ellipsis)}
)
_OPAQUE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
    types.CodeType,
    type,
    memoryview,
)

# Modules whose process targets take well-known arguments: name them in paths.
_INTERNAL_TARGETS = {
    "multiprocessing.pool": "Pool",
    "concurrent.futures.process": "ProcessPoolExecutor",
    "multiprocessing.managers": "Manager",
}


def _base_process_attributes() -> frozenset:
    names = set()
    for value in vars(process.BaseProcess).values():
        code = getattr(getattr(value, "fget", value), "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return frozenset(names)


_STANDARD_ATTRIBUTES = _base_process_attributes()


def process_kind(proc: Any) -> Tuple[str, Optional[Tuple[str, ...]]]:
    """Who started this process (Process, Pool, ProcessPoolExecutor, Manager)
    and, for the latter three, the names of its target's positional arguments."""
    target = getattr(proc, "_target", None)
    module = getattr(target, "__module__", None)
    via = _INTERNAL_TARGETS.get(module or "")
    if via is None:
        return "Process", None
    func = getattr(target, "__func__", target)
    code = getattr(func, "__code__", None)
    if code is None:
        return via, None
    names = code.co_varnames[: code.co_argcount]
    if isinstance(target, types.MethodType):
        names = names[1:]
    return via, tuple(names)


def process_roots(proc: Any) -> Iterator[Tuple[str, Any]]:
    """What the child receives, as (path, object) pairs."""
    target = getattr(proc, "_target", None)
    if isinstance(target, (types.MethodType, functools.partial)) or (
        target is not None and not isinstance(target, _OPAQUE)
    ):
        yield "target", target
    args = getattr(proc, "_args", ())
    _, names = process_kind(proc)
    if names:
        for i, arg in enumerate(args):
            yield (names[i] if i < len(names) else f"args[{i}]"), arg
    else:
        yield "args", args
    yield "kwargs", getattr(proc, "_kwargs", {})
    for name, value in vars(proc).items():
        if name not in _STANDARD_ATTRIBUTES:
            yield f"self.{name}", value


def children(obj: Any, limit: Optional[int] = None) -> Iterator[Tuple[str, Any]]:
    """The parts of ``obj`` that pickling would carry, with their path suffixes."""
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj if limit is None else obj[:limit]):
            yield f"[{i}]", item
    elif isinstance(obj, dict):
        for n, (key, value) in enumerate(obj.items()):
            if limit is not None and n >= limit:
                break
            if type(key) not in ATOMIC:
                yield f".keys()[{n}]", key
            yield f"[{key!r}]", value
    elif isinstance(obj, (set, frozenset)):
        for n, item in enumerate(obj):
            if limit is not None and n >= limit:
                break
            yield f".<item {n}>", item
    elif isinstance(obj, functools.partial):
        yield ".func", obj.func
        for i, arg in enumerate(obj.args):
            yield f".args[{i}]", arg
        for key, value in (obj.keywords or {}).items():
            yield f".keywords[{key!r}]", value
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
    elif not isinstance(obj, _OPAQUE):
        try:
            attrs = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            attrs = None
        if isinstance(attrs, dict):
            for name, value in list(attrs.items()):
                yield f".{name}", value
        for cls in type(obj).__mro__:
            for slot in _slots(cls):
                with contextlib.suppress(AttributeError):
                    yield f".{slot}", object.__getattribute__(obj, slot)


def _slots(cls: type) -> Tuple[str, ...]:
    slots = cls.__dict__.get("__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    return tuple(s for s in slots if s not in ("__dict__", "__weakref__"))


def walk(
    roots: Iterator[Tuple[str, Any]],
    visit: Callable[[str, Any], bool],
    budget: int,
    per_container: Optional[int] = None,
) -> bool:
    """Depth-first walk calling ``visit(path, obj)``; descend where it returns True.

    Visits at most ``budget`` objects and ``per_container`` items of any one
    container. Returns False when the walk was cut short.
    """
    stack: List[Tuple[str, Any]] = list(roots)
    stack.reverse()
    seen: Dict[int, Any] = {}
    while stack:
        path, obj = stack.pop()
        if type(obj) in ATOMIC:
            continue
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        budget -= 1
        if budget < 0:
            return False
        if not visit(path, obj):
            continue
        try:
            parts = [(path + suffix, child) for suffix, child in children(obj, per_container)]
        except Exception:  # an object whose inspection raises: pickling would decide
            continue
        parts.reverse()
        stack.extend(parts)
    return True


def locate(proc: Any, wanted: Dict[int, Any], budget: int = 200_000) -> Dict[int, str]:
    """Paths of the ``wanted`` objects (by id) inside what ``proc`` sends its child."""
    found: Dict[int, str] = {}

    def visit(path: str, obj: Any) -> bool:
        if id(obj) in wanted and id(obj) not in found:
            found[id(obj)] = path
            return False
        return len(found) < len(wanted)

    walk(process_roots(proc), visit, budget)
    if len(found) < len(wanted):
        _locate_by_reduce(proc, wanted, found, budget)
    return found


def _locate_by_reduce(
    proc: Any, wanted: Dict[int, Any], found: Dict[int, str], budget: int
) -> None:
    """Second pass for objects reachable only through ``__reduce_ex__`` state."""

    def reduced(obj: Any) -> Iterator[Tuple[str, Any]]:
        yield from children(obj)
        if isinstance(obj, (list, tuple, dict, set, frozenset, _OPAQUE)):
            return
        try:
            rv = obj.__reduce_ex__(4)
        except Exception:
            return
        if isinstance(rv, tuple):
            for i, part in enumerate(rv[1:3]):
                yield (".<reduce args>" if i == 0 else ".<state>"), part

    stack: List[Tuple[str, Any]] = list(process_roots(proc))
    seen: Dict[int, Any] = {}
    while stack and budget > 0:
        path, obj = stack.pop()
        if type(obj) in ATOMIC or id(obj) in seen:
            continue
        seen[id(obj)] = obj
        budget -= 1
        if id(obj) in wanted and id(obj) not in found:
            found[id(obj)] = path
            continue
        try:
            stack.extend([(path + suffix, child) for suffix, child in reduced(obj)])
        except Exception:
            continue
