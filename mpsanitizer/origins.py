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
from typing import Any, Callable, Dict, Optional

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


class _Local(threading.local):
    origin: Optional[Origin] = None  # a class default: reading it never raises


class _Tracker:
    """Per-process state of the creation hooks."""

    def __init__(self) -> None:
        self.local = _Local()
        self.pid = os.getpid()
        self.depth = 8
        # Records of objects not born in a fork context: while there are none, no fork
        # start can hand a child anything from another context, and its check is skipped.
        self.foreign = 0

    def reset_after_fork(self) -> None:
        self.local = _Local()
        self.pid = os.getpid()


tracker = _Tracker()


def origin_of(semlock: Any) -> Optional[Origin]:
    return getattr(semlock, ATTRIBUTE, None)


def _default_start_method() -> str:
    from multiprocessing import context

    return context._default_context.get_start_method()


def track_composite(wrapped: Callable, instance: Any, args: tuple, kwargs: Dict) -> Any:
    """wrapt wrapper for Queue, Event, Condition, Barrier, Value, Array constructors."""
    local = tracker.local
    if local.origin is not None:
        return wrapped(*args, **kwargs)
    try:
        local.origin = Origin(stacks.capture(tracker.depth), tracker.pid)
    except Exception as exc:  # pragma: no cover - defensive
        report_fault("recording an object's origin", exc)
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    finally:
        local.origin = None


def track_semlock(wrapped: Callable, instance: Any, args: tuple, kwargs: Dict) -> Any:
    """wrapt wrapper for ``SemLock.__init__``: every Lock-like object passes here."""
    wrapped(*args, **kwargs)
    try:
        origin = tracker.local.origin
        if origin is None:
            origin = Origin(stacks.capture(tracker.depth), tracker.pid)
        if origin.start_method is None:
            ctx = kwargs.get("ctx")
            origin.start_method = (
                ctx.get_start_method() if ctx is not None else _default_start_method()
            )
            if origin.start_method != "fork":
                tracker.foreign += 1
        setattr(instance, ATTRIBUTE, origin)
    except Exception as exc:
        report_fault("recording a SemLock's origin", exc)
