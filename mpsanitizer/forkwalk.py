"""The walk for tracked objects in what a child receives, built to run inside fork starts.

After a fork the parent shares every memory page with its child, and the first write to
one copies it (a minor page fault, about a microsecond: more than the rest of the walk).
Every object the walk touches is written (its reference count), so the walk touches
little: one loop, reading one table per way of walking, which says what to do with each
class met and which attribute names are ``BaseProcess``'s own. A class is looked at
closely only the first time it is met (:func:`_learn`).
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Dict, List, Optional

from . import extension, flavours, kinds, walk

# What the walk does with an object, by its class; and what marks BaseProcess's own names.
SKIP, SEQUENCE, MAPPING, TRACKED, PLAIN, FUNCTION, CLOSED, OTHER = range(8)
PROCESS, STANDARD = 8, 9  # a plain process class; BaseProcess's own attribute names
# Walked as OTHER (walk.parts) here, and by the C walk without inspection: a bound method
# (its __self__), a built-in function (nothing), a functools.partial (its three fields).
METHOD, BUILTIN, PARTIAL = 10, 11, 12
_FORK_ONLY = {types.MethodType: METHOD, types.BuiltinFunctionType: BUILTIN}
_FORK_ONLY[functools.partial] = PARTIAL

Table = Dict[Any, int]  # class -> what to do; attribute name -> STANDARD


def _table() -> Table:
    return dict.fromkeys(walk.STANDARD_ATTRIBUTES, STANDARD)


# What a fork child sees; what a pickling sends, with functions by value (cloudpickle,
# dill) or by name (pickle: no closure or default travels).
IN_FORK, PICKLED, PICKLED_BY_NAME = _table(), _table(), _table()


def forget() -> None:
    """Start the tables again: the tracked classes changed (a copy of multiprocessing was
    imported, and a class seen before may subclass one of its classes)."""
    for table in (IN_FORK, PICKLED, PICKLED_BY_NAME):
        table.clear()
        table.update(_table())


def _learn(obj: Any, table: Table) -> int:
    """What ``table``'s walk does with objects of the class of ``obj``, remembered."""
    cls = type(obj)
    if cls in walk.ATOMIC:
        kind = SKIP
    elif cls is list or cls is tuple:
        kind = SEQUENCE
    elif cls is dict:
        kind = MAPPING
    elif kinds.is_tracked(obj):  # may learn new classes, and so empty the tables
        kind = TRACKED
    elif table is not IN_FORK and walk.reduces_in_python(cls):
        kind = CLOSED  # what it sends is known only by running its code
    elif walk.is_plain(cls):
        kind = PLAIN
    elif cls is types.FunctionType:  # what a forked child can reach through it
        kind = CLOSED if table is PICKLED_BY_NAME else FUNCTION
    elif table is IN_FORK and cls in _FORK_ONLY:
        kind = _FORK_ONLY[cls]
    else:
        kind = OTHER
    if len(table) < 10_000:
        table[cls] = kind
    return kind


def tracked(roots: List[Any], budget: int, per_container: int, table: Table) -> List[Any]:
    """The tracked objects among the first ``budget`` objects reachable from ``roots``
    (at most ``per_container`` items of any one container), breadth first: primitives
    sit near the top of what a child receives (an argument, a config object's attribute),
    not deep inside its data. ``table``: :data:`IN_FORK`, :data:`PICKLED` or
    :data:`PICKLED_BY_NAME`.

    It allocates as little as it can: no deque, no generator, no paths
    (:func:`mpsanitizer.walk.locate` names the few objects found).
    """
    todo = roots  # a queue read from the front by index: no popleft, no deque
    seen = set()  # ids: every object met is held by the process object, so ids stay unique
    found: List[Any] = []
    i = 0
    while i < len(todo):
        obj = todo[i]
        i += 1
        kind = table.get(type(obj))
        if kind is None:
            kind = _learn(obj, table)
        if kind == SKIP:
            continue
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        budget -= 1
        if budget < 0:
            break
        if kind == SEQUENCE:
            todo += obj if len(obj) <= per_container else obj[:per_container]
        elif kind == TRACKED:
            found.append(obj)
        elif kind == MAPPING and len(obj) <= per_container:
            todo += obj  # the keys
            todo += obj.values()
        elif kind == PLAIN and type(attrs := obj.__dict__) is dict and len(attrs) <= per_container:
            todo += attrs.values()  # a dict's own methods: a subclass's do not run
        elif kind == FUNCTION:
            if obj.__defaults__:
                todo.append(obj.__defaults__)
            if obj.__kwdefaults__:
                todo.append(obj.__kwdefaults__)
            for cell in obj.__closure__ or ():
                try:
                    todo.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    continue
        elif kind == CLOSED:
            continue
        else:  # the rest, and what is cut to per_container items
            try:
                todo += [part[2] for part in walk.parts(obj, per_container)]
            except Exception:  # an object whose inspection raises: pickling would decide
                continue
    return found


FORK_BUDGET = 48  # objects: about 0.7 to 1 µs each, so any arguments stay under 50 µs
FORK_PER_CONTAINER = 16

OnFound = Callable[[Any, Any, List[Any]], Optional[BaseException]]


def fork_check(on_found: OnFound) -> Callable[[Any, Any], Optional[BaseException]]:
    """``check(popen, process)`` for fork's ``Popen._launch`` hook: the walk, then
    ``on_found(popen, process, tracked)``, which returns the error to raise, only when it
    finds something. One call, one loop: each function called is pages written.

    Where the C extension is built, the check is its ``ForkCheck`` (in
    ``mpsanitizer/_native.c``): the same walk holding no reference, so it writes no page
    of the objects it reads, which hands to this module's check whatever only Python can
    judge (a class met for the first time, an object walked by inspection)."""

    def check(popen: Any, proc: Any) -> Optional[BaseException]:
        try:
            if getattr(popen, "method", "fork") != "fork":  # spawn's Popen subclasses fork's
                return None
            roots = _roots(proc, IN_FORK)
            if roots is None:
                return None
            found = tracked(roots, FORK_BUDGET, FORK_PER_CONTAINER, IN_FORK)
        except Exception as exc:
            from .faults import report_fault

            report_fault("checking a fork start", exc)
            return None
        return on_found(popen, proc, found) if found else None

    native = extension.get()
    if native is None:
        return check
    try:
        made = native.ForkCheck(IN_FORK, FORK_BUDGET, FORK_PER_CONTAINER, check, on_found)
    except Exception:  # a build of another version of the C file
        return check
    return made.check  # type: ignore[no-any-return]


def _roots(proc: Any, table: Table) -> Optional[List[Any]]:
    """What a fork child receives of ``proc``, read as ``object`` reads it; None for what
    is not a process object."""
    cls = type(proc)
    if table.get(cls) == PROCESS:
        attrs = proc.__dict__
        roots = [attrs.get("_args"), attrs.get("_kwargs"), attrs.get("_target")]
        for name in attrs:
            if table.get(name) != STANDARD:  # an attribute of a Process subclass
                roots.append(attrs[name])
        return roots
    if not is_process(proc):
        return None
    if walk.is_plain(cls):  # no slots, no __dict__ or __getattribute__ of its own
        table[cls] = PROCESS
    return walk.child_objects(proc)


_BaseProcess = walk.process.BaseProcess


def is_process(obj: Any) -> bool:
    """A process object of multiprocessing (first, without building anything: this runs in
    every fork start) or of one of its copies."""
    if isinstance(obj, _BaseProcess):
        return True
    return isinstance(obj, flavours.classes("process", "BaseProcess"))


kinds.RELEARNED.append(forget)
