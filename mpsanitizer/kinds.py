"""Which objects are context-bound, what users call them, and their inner SemLocks."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import flavours, origins, typeinfo

_Entry = Tuple[str, Tuple[str, ...]]  # (factory name users call, attributes holding inner ones)

# module -> (class name, factory name, attributes holding SemLocks or composites), for
# multiprocessing and its copies (flavours.py)
_OF_MODULE: Dict[str, Tuple[Tuple[str, str, Tuple[str, ...]], ...]] = {
    "synchronize": (
        ("Lock", "Lock", ()),
        ("RLock", "RLock", ()),
        ("BoundedSemaphore", "BoundedSemaphore", ()),
        ("Semaphore", "Semaphore", ()),
        ("SemLock", "SemLock", ()),
        ("Condition", "Condition", ("_lock", "_sleeping_count", "_woken_count", "_wait_semaphore")),
        ("Event", "Event", ("_cond", "_flag")),
        ("Barrier", "Barrier", ("_cond",)),
    ),
    "queues": (
        (
            "JoinableQueue",
            "JoinableQueue",
            ("_rlock", "_wlock", "_sem", "_unfinished_tasks", "_cond"),
        ),
        ("Queue", "Queue", ("_rlock", "_wlock", "_sem")),
        ("SimpleQueue", "SimpleQueue", ("_rlock", "_wlock")),
    ),
    "sharedctypes": (
        ("SynchronizedArray", "Array", ("_lock",)),
        ("SynchronizedString", "Array", ("_lock",)),
        ("Synchronized", "Value", ("_lock",)),
        ("SynchronizedBase", "Value", ("_lock",)),
    ),
}

_TABLE = flavours.per_package(_OF_MODULE)

# The tracked classes of the modules imported so far: no object of the others can exist,
# and importing them to look would import ctypes into programs that never use it.
_KNOWN: Dict[type, _Entry] = {}
_by_type: Dict[type, Optional[_Entry]] = {}
_unlearned = set(_TABLE)


def _learn_imported() -> None:
    """Add the classes of the modules imported since the last look."""
    learned = False
    for module_name in list(_unlearned):
        module = sys.modules.get(module_name)
        if module is None or flavours.initializing(module):
            continue  # not imported, or still being imported
        classes = [getattr(module, name, None) for name, _, _ in _TABLE[module_name]]
        if None in classes and flavours.package_of(module_name) == flavours.STANDARD:
            continue  # a module object that is not (yet) what CPython makes: look again
        for cls, (_, factory, attrs) in zip(classes, _TABLE[module_name]):
            if isinstance(cls, type):  # a copy may lack one (billiard has no Barrier)
                _KNOWN[cls] = (factory, attrs)
        _unlearned.discard(module_name)
        learned = True
    if learned:
        _by_type.clear()  # a class seen before as untracked may subclass one of these
        _by_type.update(_KNOWN)
        for forget in RELEARNED:
            forget()


RELEARNED: List[Callable[[], None]] = []  # what else remembers which classes are tracked


_UNKNOWN: Any = object()


def _entry(obj: Any) -> Optional[_Entry]:
    cls = type(obj)
    try:
        return _by_type[cls]
    except KeyError:
        pass
    if _unlearned:
        _learn_imported()
    entry = next((_KNOWN[base] for base in typeinfo.mro(cls) if base in _KNOWN), None)
    if len(_by_type) < 10_000:
        _by_type[cls] = entry
    return entry


def is_tracked(obj: Any) -> bool:
    entry = _by_type.get(type(obj), _UNKNOWN)  # the fast path of _entry, inlined: hot
    return (_entry(obj) if entry is _UNKNOWN else entry) is not None


def factory_name(obj: Any) -> str:
    """The context method that makes this object: ``Lock``, ``Queue``, ``Value``..."""
    entry = _entry(obj)
    return entry[0] if entry else typeinfo.name(type(obj))


def display_name(obj: Any) -> str:
    """The type as the user knows it: a subclass keeps its own name."""
    cls = type(obj)
    if flavours.package_of(typeinfo.module_of(cls)) is not None:
        return factory_name(obj)
    return typeinfo.qualname(cls)


def nested(obj: Any) -> List[Any]:
    """``obj`` and every tracked object inside it (a Queue's locks, an Event's condition
    and its semaphores...), outermost first; empty for an untracked object."""
    found: List[Any] = []
    seen = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        entry = _entry(item) if item is not None and id(item) not in seen else None
        if entry is None:
            continue
        seen.add(id(item))
        found.append(item)
        todo.extend(origins.read_attribute(item, attr) for attr in reversed(entry[1]))
    return found


def semlock_classes() -> Tuple[type, ...]:
    """``SemLock`` of multiprocessing and of each imported copy."""
    return flavours.classes("synchronize", "SemLock")


def semlocks_of(obj: Any) -> List[Any]:
    """Every SemLock inside a tracked object, the object itself for a SemLock."""
    semlocks = semlock_classes()
    if not semlocks:  # then no SemLock exists
        return []
    return [item for item in nested(obj) if issubclass(type(item), semlocks)]  # no __class__


def tracked_classes() -> List[type]:
    """Every tracked class, user subclasses included (they may appear at any time)."""
    if _unlearned:
        _learn_imported()
    found: List[type] = []
    seen = set()
    todo = list(_KNOWN)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found
