"""Turning the sanitizer on and off: the patches and their exact undo.

Creation hooks sit on the constructors every API ends in (``SemLock.__init__``,
``Queue.__init__``, ``sharedctypes.Value``...), so ``multiprocessing.Lock()``,
``get_context(m).Lock()``, direct construction and the internals of Pool,
ProcessPoolExecutor and Manager are all seen, and the bound methods
``multiprocessing/__init__.py`` copied at import need no rebinding. They are
generated functions (:mod:`mpsanitizer.hooks`), and so is the one on fork's
``Popen._launch``, which forks (what a wrapper allocates is freed after the fork, in
pages the child shares); the two pickling interceptions (``reduction.dump``,
``SemLock.__getstate__``) are wrapt ``FunctionWrapper``s. The same points are
patched in the copies of multiprocessing (:mod:`mpsanitizer.flavours`).
"""

from __future__ import annotations

import os
import threading

from .config import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Callable, Dict, List, Optional, Tuple

_lock = threading.RLock()
_applied: List[Tuple[Any, str, Any, Any]] = []  # (owner, name, original, replacement)
# The start-time stand-ins, (owner, name, original, stand-in): other code may hold them
# (a patch put over one, a saved reference put back), so they are pointed, not just removed.
_stand_ins: List[Tuple[Any, str, Any, Any]] = []
_patched: List[Any] = []  # the modules patched since enable()
_deferred: List[Tuple[Any, str, Any, Any]] = []  # stand-ins to check once a record is foreign
_settings: Optional[Settings] = None
_checker: Optional[Any] = None  # made at the first process start
_fork_hook_installed = False


# The start-time interceptions: attribute -> the Checker method that wraps it (None: a
# trigger only, put back as it was once the checks are on).
_START_CHECKS = {
    "dump": "begin_dump",
    "_launch": "fork_found",
    "__getstate__": "semlock_getstate",
    "set_spawning_popen": None,
}
# Library Popens that pickle without reduction.dump: their import puts the checks on, in
# case they hold the original set_spawning_popen (imported before enable()).
_LIBRARY_POPENS = (
    "joblib.externals.loky.backend.popen_loky_posix",
    "loky.backend.popen_loky_posix",
)


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

    Each multiprocessing module is patched now if the program has imported it, else
    when it does: enabling imports none of them. The creation hooks go on with
    their module. The start-time interceptions are plain stand-ins until the first
    process start, which imports wrapt (and, with it, asyncio: 50 to 70 ms) and the
    checking modules: a process that only creates primitives, such as most spawned
    children that do anything with them, never pays for those.
    """
    global _settings, _fork_hook_installed
    from . import imports, lazy, warnoptions

    warnoptions.apply_deferred()
    lazy.disarm()  # outside our lock: lazy.fire() takes its lock, then ours
    with _lock:
        from .origins import maker, tracker

        tracker.make = maker(settings.stack_depth)
        tracker.make_composite = maker(settings.stack_depth, composite=True)
        if _settings is not None:
            _settings = settings
            if _checker is not None:
                _checker.settings = settings
            return
        _settings = settings
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True
    for module_name in lazy.POINTS:  # outside our lock: an import may be under way
        imports.when_imported(module_name, _patch_module)
    for module_name in _LIBRARY_POPENS:
        imports.when_imported(module_name, _start_checks_for_library)


def _start_checks_for_library(module: Any) -> None:
    _start_checks()


def _patch_module(module: Any) -> None:
    """Put our hooks and stand-ins on one imported module (once per enable)."""
    from . import lazy

    with _lock:
        if _settings is None or module in _patched:
            return
        _patched.append(module)
        try:
            for path, kind, owner, name in lazy.points_of(module):
                if name in lazy.AT_FIRST_START:  # no stand-in: the original until a start
                    original = lazy.unwrap(vars(owner)[name])
                    _stand_ins.append((owner, name, original, None))
                    if _checker is not None:
                        _place_check(owner, name, original, None)
                    continue
                replacement = _apply(owner, name, _maker(path, owner, kind))
                if lazy.is_stand_in(replacement):
                    _stand_ins.append((owner, name, replacement.__wrapped__, replacement))
                    if _checker is not None:  # a start happened: its check goes on at once
                        _place_check(owner, name, replacement.__wrapped__, replacement)
        except Exception as exc:
            _step_aside("instrumenting " + module.__name__, exc)


def _maker(path: str, owner: Any, kind: str) -> Callable[[Callable], Any]:
    """What makes the replacement of one patch point from its original."""
    from . import lazy
    from .hooks import composite_hook, semlock_hook

    if path.rpartition(".")[2] not in _START_CHECKS:
        return semlock_hook if path == "SemLock.__init__" else composite_hook
    return lambda original: lazy.trampoline(owner, original, kind, _start_checks)


def _start_checks() -> None:
    """First process start: put the wrapt interceptions in place of their stand-ins."""
    global _checker

    from .deferred import Deferred
    from .unshadowed import OwnImports

    try:  # before our lock: these imports may wait for a module another thread imports
        with OwnImports(), Deferred():
            import wrapt  # noqa: F401

            from .handoff import Checker
    except Exception as exc:
        with _lock:
            _step_aside("preparing the start checks", exc)
        return
    with _lock:
        if _settings is None or _checker is not None:
            return
        try:
            _checker = Checker(_settings)
            for owner, name, original, stand_in in _stand_ins:
                _place_check(owner, name, original, stand_in)
        except Exception as exc:
            _step_aside("preparing the start checks", exc)


def _place_check(owner: Any, name: str, original: Callable, stand_in: Any) -> None:
    """Put the interception of one start-time point in place of its stand-in (None: of
    the original itself): a wrapt wrapper, or for fork's ``_launch`` a generated hook.

    ``SemLock.__getstate__`` runs for every SemLock pickled, mostly outside any start (a
    Lock put in a Queue, which CPython refuses): its wrapper is enabled only while this
    package's spawning Popen is set, and otherwise wrapt calls the original from C, so a
    refusal shows CPython's own traceback, with no frame of ours.

    fork's ``Popen._launch`` gets the original instead while the process holds nothing
    born outside fork, the only kind a fork child can be handed wrongly: until then a
    fork start is exactly native (the hook and the walk cost page faults, see
    :func:`mpsanitizer.forkwalk.fork_check`). The first such record puts the
    interception on."""
    import wrapt

    from . import lazy
    from .dump_hook import dump_hook
    from .hooks import fork_launch_hook
    from .origins import tracker

    if name == "_launch" and not tracker.foreign:
        lazy.point(stand_in, original)
        if vars(owner).get(name) is stand_in:
            setattr(owner, name, original)
        _deferred.append((owner, name, original, stand_in))
        tracker.on_first_foreign = _place_deferred
        if not tracker.foreign:  # else one was made meanwhile, maybe before the line above
            return
        _deferred.pop()
    check = _START_CHECKS[name]
    if check is None:  # a trigger: straight through from now on
        lazy.point(stand_in, original)
        if vars(owner).get(name) is stand_in:
            setattr(owner, name, original)
        return
    if name == "_launch":
        wrapper = fork_launch_hook(original, _fork_check())
    elif name == "dump":
        wrapper = wrapt.FunctionWrapper(original, dump_hook(original, _begin_dump))
    else:
        enabled = _spawning_popen_of(owner) if name == "__getstate__" else None
        wrapper = wrapt.FunctionWrapper(original, getattr(_checker, check), enabled=enabled)
    if stand_in is not None:
        lazy.point(stand_in, wrapper)  # for other code that calls the stand-in
    if vars(owner).get(name) in (stand_in, original):
        setattr(owner, name, wrapper)
        _applied.append((owner, name, original, wrapper))


def _fork_check() -> Callable[[Any, Any], Optional[BaseException]]:
    """What fork's ``_launch`` hook calls: the walk, made once (the hook is made once per
    original), and the current checker's verdict when it finds something."""
    global _fork_check_made
    if _fork_check_made is None:
        from .forkwalk import fork_check

        _fork_check_made = fork_check(_fork_found)
    return _fork_check_made


_fork_check_made: Optional[Callable[[Any, Any], Optional[BaseException]]] = None


def _fork_found(popen: Any, proc: Any, found: List[Any]) -> Optional[BaseException]:
    checker = _checker
    return checker.fork_found(popen, proc, found) if checker is not None else None


def _begin_dump(wrapped: Callable, args: tuple, kwargs: Dict[str, Any]) -> Any:
    """What ``reduction.dump``'s wrapper calls: the current checker's scan of a start, or
    None (CPython's own dump) when there is none or it cannot be begun."""
    checker = _checker
    if checker is None:
        return None
    try:
        return checker.begin_dump(wrapped, args, kwargs)
    except Exception as exc:
        from .faults import report_fault

        report_fault("preparing the start check", exc)
        return None


def _spawning_popen_of(owner: Any) -> Callable[[], Any]:
    """``get_spawning_popen`` of the package ``owner`` belongs to."""
    import sys

    from . import flavours

    package = flavours.package_of(owner.__module__) or flavours.STANDARD
    return sys.modules[f"{package}.context"].get_spawning_popen  # type: ignore[no-any-return]


def _place_deferred() -> None:
    """The first record born outside fork: fork starts are checked from now on."""
    from .origins import tracker

    with _lock:
        tracker.on_first_foreign = None
        try:
            while _deferred and _checker is not None:
                _place_check(*_deferred.pop())
        except Exception as exc:
            _step_aside("preparing the fork start check", exc)


def _step_aside(where: str, exc: BaseException) -> None:
    """Our fault: say so in one line, and let this start and every later one be native."""
    global _settings, _checker
    from . import imports
    from .faults import report_fault

    report_fault(where, exc)
    imports.forget(_patch_module)
    imports.forget(_start_checks_for_library)
    _restore()
    _settings = None
    _checker = None


def _restore() -> None:
    from . import lazy
    from .origins import tracker

    del _patched[:]
    del _deferred[:]
    tracker.on_first_foreign = None
    while _stand_ins:
        _, _, original, stand_in = _stand_ins.pop()
        if stand_in is not None:
            lazy.point(stand_in, original)  # straight through, for whoever still calls it
    while _applied:
        owner, name, original, replacement = _applied.pop()
        if vars(owner).get(name) is replacement:
            setattr(owner, name, original)


def disable() -> None:
    """Remove every patch: multiprocessing is exactly as CPython made it."""
    global _settings, _checker
    from . import imports, lazy

    lazy.disarm()
    imports.forget(_patch_module)
    imports.forget(_start_checks_for_library)
    with _lock:
        _restore()
        _settings = None
        _checker = None


def current_settings() -> Optional[Settings]:
    return _settings
