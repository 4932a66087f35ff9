"""Bounded walks over what a child process receives.

Used where nothing is pickled (fork children), and to name the path of an
offender that the pickling scan found (``args[0]``, ``kwargs['cfg'].queue``,
``initargs[1]``, ``self._record``).
"""

from __future__ import annotations

import functools
import types
from itertools import islice
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


# How a child hangs from its parent: kind and key, formatted only when a path is needed.
INDEX, KEY, KEY_OBJECT, ITEM, ATTR = range(5)
Part = Tuple[int, Any, Any]  # (kind, key, child)


def children(obj: Any, limit: Optional[int] = None) -> Iterator[Part]:
    """The parts of ``obj`` that pickling would carry (at most ``limit`` per container)."""
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj if limit is None else obj[:limit]):
            yield INDEX, i, item
    elif isinstance(obj, dict):
        for n, (key, value) in enumerate(islice(obj.items(), limit)):
            if type(key) not in ATOMIC:
                yield KEY_OBJECT, n, key
            yield KEY, key, value
    elif isinstance(obj, (set, frozenset)):
        for n, item in enumerate(islice(obj, limit)):
            yield ITEM, n, item
    elif isinstance(obj, functools.partial):
        yield ATTR, "func", obj.func
        yield ATTR, "args", obj.args
        yield ATTR, "keywords", obj.keywords
    elif isinstance(obj, types.MethodType):
        yield ATTR, "__self__", obj.__self__
    elif not isinstance(obj, _OPAQUE):
        try:
            attrs = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            attrs = None
        if isinstance(attrs, dict):
            for name, value in list(islice(attrs.items(), limit)):
                yield ATTR, name, value
        for slot in _slots(type(obj)):
            value = _slot_value(obj, slot)
            if value is not _UNSET:
                yield ATTR, slot, value


_UNSET = object()
_SPECIAL = (list, tuple, dict, set, frozenset, functools.partial, types.MethodType)
_PLAIN_CLASSES: Dict[type, None] = {}  # instances carry a __dict__ and nothing else


def _is_plain(cls: type) -> bool:
    """Instances whose pickled state is their ``__dict__``: no slots, no container base."""
    if len(_PLAIN_CLASSES) >= 10_000 or _slots(cls) or issubclass(cls, _SPECIAL):
        return False
    if any(base not in (object,) and base.__module__ == "builtins" for base in cls.__mro__):
        return False
    return "__dict__" in dir(cls) and not issubclass(cls, _OPAQUE)


def _slot_value(obj: Any, slot: str) -> Any:
    try:
        return object.__getattribute__(obj, slot)
    except AttributeError:
        return _UNSET


def format_part(kind: int, key: Any) -> str:
    if kind == INDEX:
        return f"[{key}]"
    if kind == KEY:
        return f"[{key!r}]"
    if kind == KEY_OBJECT:
        return f".keys()[{key}]"
    if kind == ITEM:
        return f".<item {key}>"
    return f".{key}"


_slot_cache: Dict[type, Tuple[str, ...]] = {}


def _slots(cls: type) -> Tuple[str, ...]:
    try:
        return _slot_cache[cls]
    except KeyError:
        pass
    names: List[str] = []
    for base in cls.__mro__:
        slots = base.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.extend(s for s in slots if s not in ("__dict__", "__weakref__"))
    if len(_slot_cache) < 10_000:
        _slot_cache[cls] = tuple(names)
    return tuple(names)


# A node of the walk: (parent node or root path, kind, key); paths are built on demand.
Node = Tuple[Any, int, Any]


def path_of(node: Any) -> str:
    parts: List[str] = []
    while isinstance(node, tuple):
        node, kind, key = node
        parts.append(format_part(kind, key))
    parts.append(node)
    return "".join(reversed(parts))


def walk(
    roots: Iterator[Tuple[str, Any]],
    visit: Callable[[Any, Any], bool],
    budget: int,
    per_container: Optional[int] = None,
) -> bool:
    """Depth-first walk calling ``visit(node, obj)``; descend where it returns True.

    ``path_of(node)`` names the object. Visits at most ``budget`` objects and
    ``per_container`` items of any one container. Returns False when cut short.
    """
    stack: List[Tuple[Any, Any]] = [(path, obj) for path, obj in roots if type(obj) not in ATOMIC]
    stack.reverse()
    seen: Dict[int, Any] = {}
    while stack:
        node, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        budget -= 1
        if budget < 0:
            return False
        if not visit(node, obj):
            continue
        cls = type(obj)
        if cls is list or cls is tuple:  # fast paths for the common shapes
            items = obj if per_container is None else obj[:per_container]
            for i in range(len(items) - 1, -1, -1):
                if type(items[i]) not in ATOMIC:
                    stack.append(((node, INDEX, i), items[i]))
            continue
        if cls is dict and all(type(k) in ATOMIC for k in islice(obj, per_container)):
            entries = list(islice(obj.items(), per_container))
            for key, value in reversed(entries):
                if type(value) not in ATOMIC:
                    stack.append(((node, KEY, key), value))
            continue
        if cls in _PLAIN_CLASSES:
            attrs = object.__getattribute__(obj, "__dict__")
            entries = list(islice(attrs.items(), per_container))
            for name, value in reversed(entries):
                if type(value) not in ATOMIC:
                    stack.append(((node, ATTR, name), value))
            continue
        try:
            parts = [
                ((node, kind, key), child)
                for kind, key, child in children(obj, per_container)
                if type(child) not in ATOMIC
            ]
            if _is_plain(cls):
                _PLAIN_CLASSES[cls] = None
        except Exception:  # an object whose inspection raises: pickling would decide
            continue
        parts.reverse()
        stack.extend(parts)
    return True


def locate(proc: Any, wanted: Dict[int, Any], budget: int = 200_000) -> Dict[int, str]:
    """Paths of the ``wanted`` objects (by id) inside what ``proc`` sends its child."""
    found: Dict[int, str] = {}

    def visit(node: Any, obj: Any) -> bool:
        if id(obj) in wanted and id(obj) not in found:
            found[id(obj)] = path_of(node)
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
        for kind, key, child in children(obj):
            yield format_part(kind, key), child
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
