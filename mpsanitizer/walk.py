"""Bounded walks over what a child process receives.

Used where nothing is pickled (fork children), and to name the path of an
offender that the pickling scan found (``args[0]``, ``kwargs['cfg'].queue``,
``initargs[1]``, ``self._record``).
"""

from __future__ import annotations

import copyreg
import enum
import functools
import gc
import types
import weakref
from collections import deque
from itertools import islice
from multiprocessing import process
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import flavours, typeinfo

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
    **{f"{package}.pool": "Pool" for package in flavours.PACKAGES},
    "concurrent.futures.process": "ProcessPoolExecutor",
    **{f"{package}.managers": "Manager" for package in flavours.PACKAGES},
    "joblib.externals.loky.process_executor": "loky",
    "loky.process_executor": "loky",
}


def _base_process_attributes() -> frozenset:
    """The attributes BaseProcess's own methods set: the rest of a process object's
    ``__dict__`` is a subclass's (``self._record``), handed to the child with it."""
    import dis

    names = set()
    for value in vars(process.BaseProcess).values():
        for function in (getattr(value, "fget", value), getattr(value, "fset", None)):
            code = getattr(function, "__code__", None)
            if code is not None:
                names.update(
                    i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"
                )
    return frozenset(names)


STANDARD_ATTRIBUTES = _base_process_attributes()


def process_kind(proc: Any) -> Tuple[str, Optional[Tuple[str, ...]]]:
    """Who started this process (Process, Pool, ProcessPoolExecutor, Manager)
    and, for the latter three, the names of its target's positional arguments.
    Only functions and bound methods are looked into: reading anything else could
    run the program's code (a ``__getattribute__``)."""
    target = _instance_attributes(proc).get("_target")
    kind = type(target)
    func = target.__func__ if kind is types.MethodType else target
    if type(func) is not types.FunctionType:
        return "Process", None
    via = _INTERNAL_TARGETS.get(func.__module__ or "")
    if via is None:
        return "Process", None
    code = func.__code__
    names = code.co_varnames[: code.co_argcount]
    if kind is types.MethodType:
        names = names[1:]
    return via, tuple(names)


def process_roots(proc: Any) -> Iterator[Tuple[str, Any]]:
    """What the child receives, as (path, object) pairs: read from the process's
    ``__dict__`` and slots, as pickling reads them, running none of its code."""
    attrs = _instance_attributes(proc)
    target = attrs.get("_target")
    kind = type(target)
    if issubclass(kind, (types.FunctionType, types.MethodType, functools.partial)) or (
        target is not None and not issubclass(kind, _OPAQUE)
    ):
        yield "target", target
    args = attrs.get("_args", ())
    _, names = process_kind(proc)
    if names:
        for i, arg in enumerate(args if type(args) is tuple else ()):
            yield (names[i] if i < len(names) else f"args[{i}]"), arg
    else:
        yield "args", args
    yield "kwargs", attrs.get("_kwargs", {})
    for name, value in attrs.items():
        if name not in STANDARD_ATTRIBUTES:
            yield f"self.{name}", value
    cls = type(proc)
    for name, member in _slots(cls):
        try:
            yield f"self.{name}", member.__get__(proc, cls)
        except AttributeError:  # an empty slot
            continue


def _instance_attributes(obj: Any) -> Dict[str, Any]:
    get_dict = _dict_getter(type(obj))
    attrs = get_dict(obj) if get_dict is not None else None
    return attrs if type(attrs) is dict else {}


# How a child hangs from its parent: kind and key, formatted only when a path is needed.
INDEX, KEY, KEY_OBJECT, ITEM, ATTR, REDUCE_ARGS, STATE, CLOSURE, GLOBAL = range(9)
VIEWED, REFERENT = 9, 10  # a mappingproxy's mapping; what a weak reference refers to
Part = Tuple[int, Any, Any]  # (kind, key, child)
_SPECIAL = (list, tuple, dict, set, frozenset, deque, functools.partial, types.MethodType)
_PLAIN_CLASSES: Dict[type, bool] = {}  # True: instances carry a __dict__ and nothing else


def parts(obj: Any, limit: Optional[int] = None) -> List[Part]:
    """The parts of ``obj`` that a child could reach and that could hold a tracked
    object (ints, strings and the like are left out), at most ``limit`` per container.

    It runs none of the object's code: containers are read through their base type's
    own methods (a dict subclass's ``items()`` is not called), attributes through the
    descriptors of ``object`` and of the slots. Returns a list and remembers which
    classes are plain: it runs inside ``Process.start()`` for fork children.
    """
    cls = type(obj)
    if cls is list or cls is tuple:  # the commonest containers, before any lookup
        items = obj if limit is None else obj[:limit]
        return [(INDEX, i, item) for i, item in enumerate(items) if type(item) not in ATOMIC]
    if _PLAIN_CLASSES.get(cls):
        return _attributes(obj, cls, limit)
    base = next((b for b in _CONTAINERS if issubclass(cls, b)), None)
    if base is not None:
        found = _container_parts(obj, base, limit)
        if cls is not base:  # a subclass: its instance attributes are pickled too
            found += _attributes(obj, cls, limit)
        return found
    if issubclass(cls, functools.partial):
        return [
            (ATTR, name, field.__get__(obj, functools.partial))
            for name, field in _PARTIAL_FIELDS.items()
        ]
    if issubclass(cls, types.MethodType):
        return [(ATTR, "__self__", obj.__self__)]
    if issubclass(cls, weakref.ref):  # a fork child reaches what it refers to (WeakSet's)
        referent = _dereference(obj)
        return [] if referent is None else [(REFERENT, None, referent)]
    if cls is types.MappingProxyType:  # its mapping, as the C type holds it: no code runs
        return [(VIEWED, None, mapping) for mapping in gc.get_referents(obj)]
    if issubclass(cls, _OPAQUE) or _is_machinery(cls):
        return []
    found = _attributes(obj, cls, limit)
    if cls not in _PLAIN_CLASSES and len(_PLAIN_CLASSES) < 10_000:
        _PLAIN_CLASSES[cls] = is_plain(cls)
    return found


_CONTAINERS = (list, tuple, dict, set, frozenset, deque)
_dereference = weakref.ref.__call__  # a subclass's own __call__ does not run
_PARTIAL_FIELDS = {name: vars(functools.partial)[name] for name in ("func", "args", "keywords")}


def _container_parts(obj: Any, base: type, limit: Optional[int]) -> List[Part]:
    if base is dict:
        found: List[Part] = []
        for n, (key, value) in enumerate(islice(dict.items(obj), limit)):
            if type(key) not in ATOMIC:
                found.append((KEY_OBJECT, n, key))
            if type(value) not in ATOMIC:
                found.append((KEY, key, value))
        return found
    kind = ITEM if base is set or base is frozenset else INDEX
    items = islice(base.__iter__(obj), limit)  # type: ignore[attr-defined]
    return [(kind, n, item) for n, item in enumerate(items) if type(item) not in ATOMIC]


def _attributes(obj: Any, cls: type, limit: Optional[int]) -> List[Part]:
    """The instance ``__dict__`` and slots of ``obj``, read without running its code."""
    found: List[Part] = []
    get_dict = _dict_getter(cls)
    if issubclass(cls, BaseException):  # its dict is made at the first look, then pickled
        attrs = next((r for r in gc.get_referents(obj) if type(r) is dict), None)
        args = _EXCEPTION_ARGS(obj)  # pickled as the arguments of its class
        if args:
            found.append((ATTR, "args", args))
    else:
        attrs = get_dict(obj) if get_dict is not None else None
    if type(attrs) is dict:
        items = attrs.items()
        if limit is not None and len(attrs) > limit:
            items = islice(items, limit)  # type: ignore[assignment]
        found += [(ATTR, name, value) for name, value in items if type(value) not in ATOMIC]
    for name, member in _slots(cls):
        try:
            value = member.__get__(obj, cls)
        except AttributeError:  # an empty slot
            continue
        if type(value) not in ATOMIC:
            found.append((ATTR, name, value))
    return found


_EXCEPTION_ARGS = vars(BaseException)["args"].__get__
_dict_getters: Dict[type, Optional[Callable[[Any], Any]]] = {}
_C_DESCRIPTORS = (types.GetSetDescriptorType, types.MemberDescriptorType)
_OBJECT_GETATTRIBUTE = object.__getattribute__


def _dict_getter(cls: type) -> Optional[Callable[[Any], Any]]:
    """The C getter of the instance ``__dict__`` of ``cls``, or None (no dict, or a
    ``__dict__`` of the class's own making, such as a property)."""
    try:
        return _dict_getters[cls]
    except KeyError:
        pass
    getter = None
    descriptor = typeinfo.lookup(cls, "__dict__")
    if type(descriptor) in _C_DESCRIPTORS:  # a C type's member (SimpleNamespace) or a class's
        getter = descriptor.__get__
    if len(_dict_getters) < 10_000:
        _dict_getters[cls] = getter
    return getter


def parts_with_code(obj: Any, limit: Optional[int] = None) -> List[Part]:
    """``parts`` plus, for a function, what a pickler by value sends with it (its closure,
    defaults and globals) and a fork child reaches through it."""
    found = parts(obj, limit)
    if type(obj) is types.FunctionType:
        return found + _function_parts(obj)
    return found


def parts_with_reduce(obj: Any, limit: Optional[int] = None) -> List[Part]:
    """``parts_with_code`` plus what ``__reduce_ex__`` gives (objects with custom pickled
    state): its arguments, state, list items and dict items. Runs the object's own
    reduction, as pickling did: only for naming an offender that pickling found."""
    found = parts_with_code(obj, limit)
    cls = type(obj)
    if cls is types.FunctionType or issubclass(cls, (*_SPECIAL, *_OPAQUE)):
        return found
    if not reduces_in_python(cls) and not _holds_objects_natively(obj):
        return found
    try:
        rv = obj.__reduce_ex__(4)
    except Exception:
        return found
    if not isinstance(rv, tuple):
        return found
    found.extend(
        (kind, None, part)
        for kind, part in zip((REDUCE_ARGS, STATE), rv[1:3])
        if type(part) not in ATOMIC
    )
    if len(rv) > 3 and rv[3] is not None:
        items = islice(rv[3], limit)
        found.extend((INDEX, n, item) for n, item in enumerate(items) if type(item) not in ATOMIC)
    if len(rv) > 4 and rv[4] is not None:
        for key, value in islice(rv[4], limit):
            if type(value) not in ATOMIC:
                found.append((KEY, key, value))
    return found


REDUCTIONS = ("__reduce_ex__", "__reduce__", "__getstate__")  # a class's own pickling
_python_reducers: Dict[type, bool] = {}


def registered_reducer(cls: type, packages: Optional[List[Any]] = None) -> Optional[Callable]:
    """The reducer registered for ``cls`` with ForkingPickler (of the ``reduction``
    modules given, else of every imported package) or copyreg, if any."""
    for module in flavours.modules("reduction") if packages is None else packages:
        found = getattr(module.ForkingPickler, "_extra_reducers", {}).get(cls)
        if found is not None:
            return found
    return copyreg.dispatch_table.get(cls)


def reduces_in_python(cls: type) -> bool:
    """Whether instances pickle through a ``__reduce__``, ``__reduce_ex__`` or
    ``__getstate__`` of Python code, with no reducer registered for the class: the only
    objects whose pickled state :func:`parts` may not show. The rest are never reduced
    to name a path: a C type's reduction (a numpy array's) copies its data, a registered
    one (torch's tensors) moves it to shared memory, and neither holds a primitive."""
    try:
        return _python_reducers[cls]
    except KeyError:
        pass
    found = registered_reducer(cls) is None and any(
        type(typeinfo.lookup(cls, name)) is types.FunctionType for name in REDUCTIONS
    )
    if len(_python_reducers) < 10_000:
        _python_reducers[cls] = found
    return found


def _holds_objects_natively(obj: Any) -> bool:
    """A C object, with no reducer registered for its class, whose reduction can list
    Python objects: one with no buffer (pandas' blocks), or whose buffer holds objects (a
    numpy array of dtype object). One whose buffer holds plain data (a numeric array)
    would copy it all, and holds no primitive."""
    if registered_reducer(type(obj)) is not None:
        return False
    try:
        with memoryview(obj) as view:
            return "O" in view.format
    except Exception:  # no buffer
        return True


def _function_parts(func: types.FunctionType) -> List[Part]:
    """What a pickler that pickles functions by value (cloudpickle, for loky) sends with
    one: its closure cells, defaults and the globals its code names."""
    found: List[Part] = []
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
        try:
            found.append((CLOSURE, name, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    if func.__defaults__:
        found.append((ATTR, "__defaults__", func.__defaults__))
    if func.__kwdefaults__:
        found.append((ATTR, "__kwdefaults__", func.__kwdefaults__))
    found.extend(
        (GLOBAL, name, func.__globals__[name])
        for name in func.__code__.co_names
        if name in func.__globals__
    )
    return [part for part in found if type(part[2]) not in ATOMIC]


# Classes whose instances run processes of their own: what a child inherits of one (a fork
# child, a pool held by its target's object) is their machinery, no primitive of the
# program's, and unusable there; spawn cannot send one at all.
_MACHINERY = {
    **flavours.per_package({"pool": "Pool"}),
    "concurrent.futures.process": "ProcessPoolExecutor",
    "loky.process_executor": "ProcessPoolExecutor",
    "joblib.externals.loky.process_executor": "ProcessPoolExecutor",
}
_machinery: Dict[type, bool] = {}


def _is_machinery(cls: type) -> bool:
    try:
        return _machinery[cls]
    except KeyError:
        pass
    found = any(
        _MACHINERY.get(typeinfo.module_of(base)) == typeinfo.qualname(base)
        for base in typeinfo.mro(cls)
    )
    if len(_machinery) < 10_000:
        _machinery[cls] = found
    return found


def is_plain(cls: type) -> bool:
    """Instances whose pickled state is their ``__dict__`` (no slots, no container base),
    and whose ``obj.__dict__`` runs no code of theirs."""
    if _slots(cls) or issubclass(cls, _SPECIAL) or _is_machinery(cls):
        return False
    bases = typeinfo.mro(cls)
    if any(base is not object and typeinfo.module_of(base) == "builtins" for base in bases):
        return False
    if typeinfo.lookup(cls, "__getattribute__") is not _OBJECT_GETATTRIBUTE:
        return False
    return _dict_getter(cls) is not None and not issubclass(cls, _OPAQUE)


def format_part(kind: int, key: Any) -> str:
    if kind == INDEX:
        return f"[{key}]"
    if kind == KEY:
        return f"[{key_text(key)}]"
    if kind == KEY_OBJECT:
        return f".keys()[{key}]"
    if kind == ITEM:
        return f".<item {key}>"
    if kind == REDUCE_ARGS:
        return ".<reduce args>"
    if kind == STATE:
        return ".<state>"
    if kind == CLOSURE:
        return f".<closure {key}>"
    if kind == GLOBAL:
        return f".<global {key}>"
    if kind == VIEWED:
        return ""
    if kind == REFERENT:
        return "()"
    return f".{key}" if type(key) is str else f".{key_text(key)}"


def key_text(key: Any) -> str:
    """A dict key as a path shows it, running none of its code: the ``repr`` of a built-in
    value, an enum member's name, a tuple of those; the type of anything else."""
    cls = type(key)
    if cls in ATOMIC:
        return repr(key)
    if cls is tuple and len(key) <= 8:
        return f"({', '.join(map(key_text, key))}{',' if len(key) == 1 else ''})"
    member = _instance_attributes(key).get("_name_") if issubclass(cls, enum.Enum) else None
    if type(member) is str:
        return f"{typeinfo.qualname(cls)}.{member}"
    return f"<{typeinfo.qualname(cls)} object>"


_slot_cache: Dict[type, Tuple[Tuple[str, Any], ...]] = {}


def _slots(cls: type) -> Tuple[Tuple[str, Any], ...]:
    """(name, member descriptor) of every slot of ``cls``, taken from the class that
    declared it: a subclass's property of the same name is never run."""
    try:
        return _slot_cache[cls]
    except KeyError:
        pass
    found: List[Tuple[str, Any]] = []
    for base in typeinfo.mro(cls):
        namespace = typeinfo.namespace(base)
        slots = namespace.get("__slots__", ())
        if type(slots) is str:
            slots = (slots,)
        elif type(slots) not in (tuple, list, dict):
            slots = ()  # an iterator, spent when the class was made
        for name in slots:
            if type(name) is not str or name in ("__dict__", "__weakref__"):
                continue
            owner = typeinfo.name(base).lstrip("_")
            stored = f"_{owner}{name}" if name.startswith("__") else name
            member = namespace.get(stored)
            if type(member) is types.MemberDescriptorType:
                found.append((name, member))
    if len(_slot_cache) < 10_000:
        _slot_cache[cls] = tuple(found)
    return tuple(found)


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
    expand: Callable[[Any, Optional[int]], List[Part]] = parts,
    done: Callable[[], bool] = lambda: False,
) -> bool:
    """Breadth-first walk calling ``visit(node, obj)`` as each object is met; descend
    where it returns True.

    ``path_of(node)`` names the object: breadth first, the shortest path, and an argument
    is met before anything inside a large one is looked at. Visits at most ``budget``
    objects and ``per_container`` items of any one container, and stops once ``done()``.
    Returns False when cut short by the budget.
    """
    seen: Dict[int, Any] = {}
    todo: List[Tuple[Any, Any]] = []  # to descend into, read by index
    met: Any = roots
    i = 0
    while True:
        for node, obj in met:
            if type(obj) in ATOMIC or id(obj) in seen:
                continue
            seen[id(obj)] = obj
            budget -= 1
            if budget < 0:
                return False
            if visit(node, obj):
                todo.append((node, obj))
            elif done():
                return True
        if i == len(todo):
            return True
        node, obj = todo[i]
        todo[i] = None  # type: ignore[call-overload]
        i += 1
        try:
            found = expand(obj, per_container)
        except Exception:  # an object whose inspection raises: pickling would decide
            found = []
        met = [((node, kind, key), child) for kind, key, child in found]


def child_objects(proc: Any) -> List[Any]:
    """What the child receives, as :func:`process_roots` gives it, without the paths:
    the roots of the walk that runs inside every fork start."""
    attrs = _instance_attributes(proc)
    found = [attrs.get("_args", ()), attrs.get("_kwargs", {}), attrs.get("_target")]
    for name in attrs:
        if name not in STANDARD_ATTRIBUTES:
            found.append(attrs[name])
    for _, member in _slots(type(proc)):
        try:
            found.append(member.__get__(proc, type(proc)))
        except AttributeError:  # an empty slot
            continue
    return found


def locate(
    proc: Any, wanted: Dict[int, Any], budget: int = 200_000, reduce: bool = True
) -> Dict[int, str]:
    """Paths of the ``wanted`` objects (by id) inside what ``proc`` sends its child.

    A second pass follows functions' closures and defaults, and a third (``reduce``: a
    start that pickled, so ran those reductions already) ``__reduce_ex__`` state, for
    objects reachable only there.
    """
    found: Dict[int, str] = {}

    def visit(node: Any, obj: Any) -> bool:
        if id(obj) in wanted and id(obj) not in found:
            found[id(obj)] = path_of(node)
            return False
        return len(found) < len(wanted)

    def finished() -> bool:
        return len(found) == len(wanted)

    for expand in (parts, parts_with_code, parts_with_reduce)[: 3 if reduce else 2]:
        if len(found) < len(wanted):
            walk(process_roots(proc), visit, budget, expand=expand, done=finished)
    return found
