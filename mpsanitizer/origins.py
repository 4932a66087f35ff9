"""Where each synchronization primitive was born.

A record is attached to every ``SemLock`` the program creates while the
sanitizer is on. ``SemLock`` defines ``__getstate__``, so the attribute never
travels with a pickle. Composite objects (a ``Queue``, an ``Event``, a
synchronized ``Value``) are made of SemLocks: the outermost constructor
captures one stack and its inner SemLocks share that record, so nothing is
recorded twice.

A record is a plain list, ``[start method, pid, serial, code, lasti, code, lasti...]``
(innermost frame first), built by one generated function: it is made on every
creation, where a class instance would cost more than the rest of the record. A
composite's serial is negative: a SemLock with a serial of 0 or more inside a
composite was made on its own and handed to it (``Value(lock=...)``).
"""

from __future__ import annotations

import itertools
import os
import threading

from . import stacks
from .config import DEFAULT_STACK_DEPTH
from .faults import report_fault

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Callable, Dict, List, Optional

ATTRIBUTE = "_mpsanitizer_origin"
METHOD, PID, SERIAL, STACK = 0, 1, 2, 3  # STACK: where the raw stack starts

if TYPE_CHECKING:
    Origin = List[Any]


class _Tracker:
    """Per-process state of the creation hooks."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.make: stacks.RawCapture = lambda skip, method: [method, self.pid, -1]
        self.make_composite: stacks.RawCapture = self.make
        # Records of objects not born in a fork context: while there are none, no fork
        # start can hand a child anything from another context, and its check is skipped.
        self.foreign = 0
        self.on_first_foreign: Optional[Callable[[], None]] = None  # run at the next one

    def reset_after_fork(self) -> None:
        self.pid = os.getpid()
        mine = building.get(threading.get_ident())
        building.clear()  # other threads did not survive the fork; their idents may return
        if mine is not None:
            building[threading.get_ident()] = mine


_next_serial = itertools.count().__next__  # one bound method: it keys the maker's cache


def maker(depth: int, composite: bool = False) -> stacks.RawCapture:
    """``make(skip, method)``: a new record for an object whose maker is the first user
    frame at or above ``skip`` calls up from the caller of ``make``."""
    fast = stacks.record_capturer(depth, composite, tracker, _next_serial)
    if fast is not None:
        return fast
    return stacks.capturer(
        depth,
        ("method", "_tracker.pid", "~_next_serial()" if composite else "_next_serial()"),
        _tracker=tracker,
        _next_serial=_next_serial,
    )


tracker = _Tracker()
tracker.make = maker(DEFAULT_STACK_DEPTH)  # enable() makes them again for its stack depth
tracker.make_composite = maker(DEFAULT_STACK_DEPTH, composite=True)
# The origin of the composite each thread is building, by thread ident: its inner SemLocks
# share it. A dict read is a fraction of a threading.local attribute read, eight per Queue.
building: Dict[int, Origin] = {}


def origin_of(semlock: Any) -> Optional[Origin]:
    """The record of a SemLock, read from its instance dict: a subclass's ``__getattr__``
    or ``__getattribute__`` does not run (nor does it for one made before enable())."""
    attrs = read_attribute(semlock, "__dict__")
    return attrs.get(ATTRIBUTE) if type(attrs) is dict else None


def read_attribute(obj: Any, name: str) -> Any:
    """``obj.name`` as ``object`` reads it, or None: no ``__getattribute__`` of a subclass."""
    try:
        return _generic_getattr(obj, name)
    except AttributeError:
        return None


_generic_getattr = object.__getattribute__


def made_alone(record: Origin) -> bool:
    """Whether the record is a SemLock's own, not a composite's that built it."""
    return record[SERIAL] >= 0


def start_method(ctx: Any, package: str = "multiprocessing") -> str:
    """The start method of the context a SemLock was made with (None: the default one of
    its package, SemLock's own rule), counting the records born outside fork."""
    if ctx is None:
        ctx = _default_context(package)
    method = ctx.get_start_method()
    if method not in STANDARD_METHODS:  # a context of the program's or a library's naming
        method = _start_method_of_named(ctx, method)
    if method != "fork":
        tracker.foreign += 1
        if tracker.on_first_foreign is not None:
            tracker.on_first_foreign()
    return method


STANDARD_METHODS = frozenset(("fork", "spawn", "forkserver"))  # CPython's own


def _start_method_of_named(ctx: Any, name: str) -> str:
    """The start method behind a context of a name of its own (a library's subclass of
    ``BaseContext`` with ``_name = 'mine'`` and a ``SpawnProcess`` subclass): its Process
    class's. A library's own method (loky's) stays as it is, and so does a name over
    fork's Process: CPython unlinks only what a context named 'fork' makes, so such a
    SemLock is not fork's."""
    method = getattr(getattr(ctx, "Process", None), "_start_method", None)
    return method if method in ("spawn", "forkserver") else name


def start_method_of(package: str) -> Callable[[Any], str]:
    """:func:`start_method` for the SemLocks of ``package`` (a copy of multiprocessing has
    its own default context)."""
    if package == "multiprocessing":
        return start_method
    return lambda ctx: start_method(ctx, package)


def _default_context(package: str) -> Any:
    import sys

    if package == "multiprocessing":
        from multiprocessing import context
    else:
        context = sys.modules[f"{package}.context"]
    return context._default_context


def fail(exc: BaseException) -> None:
    report_fault("recording an object's origin", exc)
