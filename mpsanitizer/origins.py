"""Where each synchronization primitive was born.

A record is attached to every ``SemLock`` the program creates while the
sanitizer is on. ``SemLock`` defines ``__getstate__``, so the attribute never
travels with a pickle. Composite objects (a ``Queue``, an ``Event``, a
synchronized ``Value``) are made of SemLocks: the outermost constructor
captures one stack and its inner SemLocks share that record, so nothing is
recorded twice.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Dict, Optional

from . import stacks
from .faults import report_fault

ATTRIBUTE = "_mpsanitizer_origin"


class Origin:
    """Start method, creating pid and raw creation stack of one user-made object."""

    __slots__ = ("pid", "serial", "stack", "start_method")

    def __init__(self, stack: stacks.RawStack, pid: int) -> None:
        self.start_method: Optional[str] = None
        self.pid = pid
        self.stack = stack
        self.serial = next(_serials)


_serials = itertools.count()


class _Tracker:
    """Per-process state of the creation hooks."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.capture = stacks.capturer(8)
        # Records of objects not born in a fork context: while there are none, no fork
        # start can hand a child anything from another context, and its check is skipped.
        self.foreign = 0

    def reset_after_fork(self) -> None:
        self.pid = os.getpid()
        mine = building.get(threading.get_ident())
        building.clear()  # other threads did not survive the fork; their idents may return
        if mine is not None:
            building[threading.get_ident()] = mine


tracker = _Tracker()
# The origin of the composite each thread is building, by thread ident: its inner SemLocks
# share it. A dict read is a fraction of a threading.local attribute read, eight per Queue.
building: Dict[int, Origin] = {}


def origin_of(semlock: Any) -> Optional[Origin]:
    return getattr(semlock, ATTRIBUTE, None)


def new_origin() -> Optional[Origin]:
    """A record for an object being made by the caller of the hook that calls this."""
    try:
        return Origin(tracker.capture(stacks.user_frame(2)), tracker.pid)
    except Exception as exc:
        report_fault("recording an object's origin", exc)
        return None


def record(semlock: Any, ctx: Any, origin: Optional[Origin]) -> None:
    """Attach an origin to a new SemLock: the composite's being built (``origin``), or
    its own. The hook calls this for a bare SemLock and the first of a composite's."""
    try:
        if origin is None:  # a bare Lock, made by the first user frame above the hook's
            # caller: that caller is a SemLock subclass's __init__ (Lock, RLock...).
            origin = Origin(tracker.capture(stacks.user_frame(3)), tracker.pid)
        if origin.start_method is None:
            if ctx is None:  # SemLock's own rule: no context means the default one
                from multiprocessing import context

                ctx = context._default_context
            origin.start_method = ctx.get_start_method()
            if origin.start_method != "fork":
                tracker.foreign += 1
        semlock._mpsanitizer_origin = origin
    except Exception as exc:
        report_fault("recording a SemLock's origin", exc)
