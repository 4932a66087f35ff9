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
from typing import Any, Callable, List, Optional, Tuple

from .config import Settings

_lock = threading.RLock()
_applied: List[Tuple[Any, str, Any, Any]] = []  # (owner, name, original, wrapper)
_checker: Optional[Any] = None
_fork_hook_installed = False


def _patch_table(checker: Any) -> List[Tuple[Any, str, Callable]]:
    from multiprocessing import popen_fork, queues, reduction, sharedctypes, synchronize

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
        (reduction, "dump", _wrapt(checker.dump)),
        (popen_fork.Popen, "_launch", _wrapt(checker.fork_launch)),
    ]


def _wrapt(wrapper: Callable) -> Callable[[Callable], Any]:
    """The start-time interceptions are wrapt wrappers: they run once per start, where
    wrapt's exact descriptor behaviour matters more than its per-call cost."""
    import wrapt

    return lambda original: wrapt.FunctionWrapper(original, wrapper)


def _after_fork_in_child() -> None:
    from .origins import tracker

    tracker.reset_after_fork()
    if _checker is not None:
        _checker.reset_after_fork()


def enable(settings: Settings) -> None:
    """Apply the patches (or just take the new settings when already applied)."""
    global _checker, _fork_hook_installed
    from . import lazy

    lazy.disarm()  # outside our lock: lazy.fire() takes its lock, then ours
    with _lock:
        from . import stacks
        from .handoff import Checker
        from .origins import tracker

        tracker.capture = stacks.capturer(settings.stack_depth)
        if _checker is not None:
            _checker.settings = settings
            return
        checker = Checker(settings)
        try:
            for owner, name, make_replacement in _patch_table(checker):
                original = vars(owner)[name]
                wrapped = make_replacement(original)
                setattr(owner, name, wrapped)
                _applied.append((owner, name, original, wrapped))
        except BaseException:
            _restore()
            raise
        _checker = checker
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True


def _restore() -> None:
    while _applied:
        owner, name, original, wrapped = _applied.pop()
        if vars(owner).get(name) is wrapped:
            setattr(owner, name, original)


def disable() -> None:
    """Remove every patch: multiprocessing is exactly as CPython made it."""
    global _checker
    from . import lazy

    lazy.disarm()
    with _lock:
        _restore()
        _checker = None


def current_settings() -> Optional[Settings]:
    checker = _checker
    return checker.settings if checker is not None else None
