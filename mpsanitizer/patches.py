"""Turning the sanitizer on and off: the patches and their exact undo.

Creation hooks sit on the constructors every API ends in (``SemLock.__init__``,
``Queue.__init__``, ``sharedctypes.Value``...), so ``multiprocessing.Lock()``,
``get_context(m).Lock()``, direct construction and the internals of Pool,
ProcessPoolExecutor and Manager are all seen, and the bound methods
``multiprocessing/__init__.py`` copied at import need no rebinding. They are
generated functions (:mod:`mpsanitizer.hooks`); the two start-time
interceptions are wrapt ``FunctionWrapper``s.
"""

from __future__ import annotations

import os
import threading

from .config import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Callable, List, Optional, Tuple

_lock = threading.RLock()
_applied: List[Tuple[Any, str, Any, Any]] = []  # (owner, name, original, replacement)
# The start-time stand-ins, (owner, name, original, stand-in): other code may hold them
# (a patch put over one, a saved reference put back), so they are pointed, not just removed.
_stand_ins: List[Tuple[Any, str, Any, Any]] = []
_settings: Optional[Settings] = None
_checker: Optional[Any] = None  # made at the first process start
_fork_hook_installed = False


def _creation_table() -> List[Tuple[Any, str, Callable[[Callable], Callable]]]:
    from multiprocessing import queues, sharedctypes, synchronize

    from .hooks import composite_hook, semlock_hook

    return [
        (synchronize.SemLock, "__init__", semlock_hook),
        (synchronize.Condition, "__init__", composite_hook),
        (synchronize.Event, "__init__", composite_hook),
        (synchronize.Barrier, "__init__", composite_hook),
        (queues.Queue, "__init__", composite_hook),
        (queues.JoinableQueue, "__init__", composite_hook),
        (queues.SimpleQueue, "__init__", composite_hook),
        (sharedctypes, "Value", composite_hook),
        (sharedctypes, "Array", composite_hook),
    ]


def _start_table() -> List[Tuple[Any, str, str, str]]:
    """(owner, name, kind, Checker method) of the two start-time interceptions."""
    from multiprocessing import popen_fork, reduction

    return [
        (reduction, "dump", "function", "dump"),
        (popen_fork.Popen, "_launch", "method", "fork_launch"),
    ]


def _after_fork_in_child() -> None:
    from .origins import tracker

    tracker.reset_after_fork()
    if _checker is not None:
        _checker.reset_after_fork()


def _apply(owner: Any, name: str, make: Callable[[Any], Any]) -> Any:
    """Put ``make(original)`` in place of ``owner.name``; return it."""
    from . import lazy

    original = lazy.unwrap(vars(owner)[name])
    replacement = make(original)
    setattr(owner, name, replacement)
    _applied.append((owner, name, original, replacement))
    return replacement


def enable(settings: Settings) -> None:
    """Apply the patches (or just take the new settings when already applied).

    The creation hooks go on at once. The start-time interceptions are plain stand-ins
    until the first process start, which imports wrapt (and, with it, asyncio: 50 to
    70 ms) and the checking modules: a process that only creates primitives, such as
    most spawned children that do anything with them, never pays for those.
    """
    global _settings, _fork_hook_installed
    from . import lazy

    lazy.disarm()  # outside our lock: lazy.fire() takes its lock, then ours
    with _lock:
        from .origins import maker, tracker

        tracker.make = maker(settings.stack_depth)
        if _settings is not None:
            _settings = settings
            if _checker is not None:
                _checker.settings = settings
            return
        try:
            for owner, name, make_hook in _creation_table():
                _apply(owner, name, make_hook)
            for owner, name, kind, _ in _start_table():
                stand_in = _apply(
                    owner, name, lambda f, o=owner, k=kind: lazy.trampoline(o, f, k, _start_checks)
                )
                _stand_ins.append((owner, name, stand_in.__wrapped__, stand_in))
        except BaseException:
            _restore()
            raise
        _settings = settings
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True


def _start_checks() -> None:
    """First process start: put the wrapt interceptions in place of their stand-ins."""
    global _settings, _checker
    from . import lazy

    with _lock:
        if _settings is None or _checker is not None:
            return
        try:
            import wrapt

            from .handoff import Checker

            checker = Checker(_settings)
            wrappers = {name: getattr(checker, method) for _, name, _, method in _start_table()}
            for owner, name, original, stand_in in _stand_ins:
                wrapper = wrapt.FunctionWrapper(original, wrappers[name])
                lazy.point(stand_in, wrapper)  # for other code that calls the stand-in
                if vars(owner).get(name) is stand_in:
                    setattr(owner, name, wrapper)
                    _applied.append((owner, name, original, wrapper))
        except Exception as exc:
            from .faults import report_fault

            report_fault("preparing the start checks", exc)
            _restore()  # step aside entirely: this start, and every later one, is native
            _settings = None
            return
        _checker = checker


def _restore() -> None:
    from . import lazy

    while _stand_ins:
        _, _, original, stand_in = _stand_ins.pop()
        lazy.point(stand_in, original)  # straight through, for whoever still calls it
    while _applied:
        owner, name, original, replacement = _applied.pop()
        if vars(owner).get(name) is replacement:
            setattr(owner, name, original)


def disable() -> None:
    """Remove every patch: multiprocessing is exactly as CPython made it."""
    global _settings, _checker
    from . import lazy

    lazy.disarm()
    with _lock:
        _restore()
        _settings = None
        _checker = None


def current_settings() -> Optional[Settings]:
    return _settings
