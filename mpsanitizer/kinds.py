"""Which objects are context-bound, what users call them, and their inner SemLocks."""

from __future__ import annotations

from multiprocessing import queues, sharedctypes, synchronize
from typing import Any, Dict, List, Optional, Tuple

# (class, factory name users call, attributes holding SemLocks or composites)
_TABLE: Tuple[Tuple[type, str, Tuple[str, ...]], ...] = (
    (synchronize.Lock, "Lock", ()),
    (synchronize.RLock, "RLock", ()),
    (synchronize.BoundedSemaphore, "BoundedSemaphore", ()),
    (synchronize.Semaphore, "Semaphore", ()),
    (synchronize.SemLock, "SemLock", ()),
    (
        synchronize.Condition,
        "Condition",
        ("_lock", "_sleeping_count", "_woken_count", "_wait_semaphore"),
    ),
    (synchronize.Event, "Event", ("_cond", "_flag")),
    (synchronize.Barrier, "Barrier", ("_cond",)),
    (
        queues.JoinableQueue,
        "JoinableQueue",
        ("_rlock", "_wlock", "_sem", "_unfinished_tasks", "_cond"),
    ),
    (queues.Queue, "Queue", ("_rlock", "_wlock", "_sem")),
    (queues.SimpleQueue, "SimpleQueue", ("_rlock", "_wlock")),
    (sharedctypes.SynchronizedArray, "Array", ("_lock",)),
    (sharedctypes.SynchronizedString, "Array", ("_lock",)),
    (sharedctypes.Synchronized, "Value", ("_lock",)),
    (sharedctypes.SynchronizedBase, "Value", ("_lock",)),
)

TRACKED_TYPES: Tuple[type, ...] = tuple(cls for cls, _, _ in _TABLE)
_Entry = Tuple[str, Tuple[str, ...]]
_KNOWN = {cls: (name, attrs) for cls, name, attrs in _TABLE}
_by_type: Dict[type, Optional[_Entry]] = dict(_KNOWN)


_UNKNOWN: Any = object()


def _entry(obj: Any) -> Optional[_Entry]:
    cls = type(obj)
    try:
        return _by_type[cls]
    except KeyError:
        pass
    entry = next((_KNOWN[base] for base in cls.__mro__ if base in _KNOWN), None)
    if len(_by_type) < 10_000:
        _by_type[cls] = entry
    return entry


def is_tracked(obj: Any) -> bool:
    entry = _by_type.get(type(obj), _UNKNOWN)  # the fast path of _entry, inlined: hot
    return (_entry(obj) if entry is _UNKNOWN else entry) is not None


def factory_name(obj: Any) -> str:
    """The context method that makes this object: ``Lock``, ``Queue``, ``Value``..."""
    entry = _entry(obj)
    return entry[0] if entry else type(obj).__name__


def display_name(obj: Any) -> str:
    """The type as the user knows it: a subclass keeps its own name."""
    cls = type(obj)
    if cls.__module__.startswith("multiprocessing."):
        return factory_name(obj)
    return cls.__qualname__


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
        todo.extend(getattr(item, attr, None) for attr in reversed(entry[1]))
    return found


def semlocks_of(obj: Any) -> List[Any]:
    """Every SemLock inside a tracked object, the object itself for a SemLock."""
    return [item for item in nested(obj) if isinstance(item, synchronize.SemLock)]


def tracked_classes() -> List[type]:
    """Every tracked class, user subclasses included (they may appear at any time)."""
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
