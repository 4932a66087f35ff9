"""Cheap activation: arm now, pay for wrapt only on first real use.

Every spawn or forkserver child is a fresh interpreter; importing wrapt (70-85 ms
for 2.x) and patching there would more than double a spawn start, although most
children never create a primitive or start a process. ``arm()`` instead puts plain
trampolines on the patch points (installing them as each multiprocessing module
is imported, through a small import hook). The first call of any trampoline
swaps them all for the real patches of :mod:`mpsanitizer.patches` and carries
on. A child that only runs its target never pays more than the hook.
"""

import sys
from _thread import RLock
from os import getpid as _getpid

from . import flavours, imports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

    from .config import Settings

# module -> [(attribute path, kind)], kind: "method" (class attribute) or "function"; for
# multiprocessing and its copies (flavours.py), which may lack some of them.
_POINTS_OF_MODULE: "Dict[str, List[Tuple[str, str]]]" = {
    "synchronize": [
        ("SemLock.__init__", "method"),
        ("SemLock.__getstate__", "method"),
        ("Condition.__init__", "method"),
        ("Event.__init__", "method"),
        ("Barrier.__init__", "method"),
    ],
    "queues": [
        ("Queue.__init__", "method"),
        ("JoinableQueue.__init__", "method"),
        ("SimpleQueue.__init__", "method"),
    ],
    "sharedctypes": [("Value", "function"), ("Array", "function")],
    "reduction": [("dump", "function")],
    "popen_fork": [("Popen._launch", "method")],
    "context": [("set_spawning_popen", "function")],  # the first spawning start
}
# Points left as they are until the first start: they run outside starts too, where a
# stand-in's frame would show in CPython's own tracebacks (patches.py).
AT_FIRST_START = frozenset({"__getstate__"})
POINTS: "Dict[str, List[Tuple[str, str]]]" = flavours.per_package(_POINTS_OF_MODULE)
# The pid of the process ``python -m mpsanitizer`` became (relaunch.py): it says the summary.
RUNNER = "MPSANITIZE_RUNNER"

_lock = RLock()
_settings: "Optional[Settings]" = None
_installed: "List[Tuple[Any, str, Any, Any]]" = []  # (owner, name, original, trampoline)
_handing_over = False  # fire() is putting the real patches over the trampolines
_firing = RLock()  # held while it does: other first uses wait for the patches


def resolve(module: "Any", path: str) -> "Tuple[Any, str]":
    owner_name, _, name = path.rpartition(".")
    return (getattr(module, owner_name) if owner_name else module), name


def points_of(module: "Any") -> "Iterator[Tuple[str, str, Any, str]]":
    """(path, kind, owner, name) of each patch point of an imported module. A copy of
    multiprocessing may lack one (billiard has no Barrier): it is skipped there; in the
    standard library a missing one is an unexpected CPython internal, and raises."""
    standard = flavours.package_of(module.__name__) == flavours.STANDARD
    for path, kind in POINTS[module.__name__]:
        try:
            owner, name = resolve(module, path)
            vars(owner)[name]
        except (AttributeError, KeyError, TypeError):
            if standard:
                raise
            continue
        yield path, kind, owner, name


def trampoline(
    owner: "Any", original: "Callable", kind: str, first_call: "Callable[[], None]"
) -> "Callable":
    """A stand-in for ``original``, an attribute of ``owner``; ``kind``: "method" (a class
    attribute) or "function".

    Its first call runs ``first_call()``, which must :func:`point` it at what now stands
    for ``original`` (a hook, or ``original`` itself); every call goes there. It never
    looks itself up by name: code that wrapped the stand-in in the meantime (a profiler's
    patch on ``reduction.dump``) would be called again, without end.
    """
    target: List[Any] = [None]

    def resolved() -> "Any":
        if target[0] is None:
            first_call()
        return target[0] if target[0] is not None else original

    if kind == "method":

        def method(self: "Any", *args: "Any", **kwargs: "Any") -> "Any":
            return resolved().__get__(self, owner)(*args, **kwargs)

        stand_in = method
    else:

        def function(*args: "Any", **kwargs: "Any") -> "Any":
            return resolved()(*args, **kwargs)

        stand_in = function
    stand_in.__wrapped__ = original  # type: ignore[attr-defined]
    stand_in._mpsanitizer_target = target  # type: ignore[attr-defined]
    # Marks it as ours by identity: a wrapper made with functools.wraps copies attributes.
    stand_in._mpsanitizer_stand_in = stand_in  # type: ignore[attr-defined]
    return stand_in


def is_stand_in(obj: "Any") -> bool:
    return getattr(obj, "_mpsanitizer_stand_in", None) is obj


def point(stand_in: "Any", target: "Any") -> None:
    """Make every later call of a :func:`trampoline` stand-in go to ``target``."""
    stand_in._mpsanitizer_target[0] = target


def unwrap(obj: "Any") -> "Any":
    """What stands behind our own stand-ins, which other code may have put back after
    saving them: patching one again would chain them."""
    while is_stand_in(obj):
        obj = obj.__wrapped__
    return obj


def _install(module: "Any") -> None:
    """Put the trampolines on one imported module's patch points."""
    with _lock:
        if _settings is None:
            return
        for _, kind, owner, name in points_of(module):
            if name in AT_FIRST_START:
                continue
            original = unwrap(vars(owner)[name])
            stand_in = trampoline(owner, original, kind, fire)
            setattr(owner, name, stand_in)
            _installed.append((owner, name, original, stand_in))


def arm(settings: "Settings") -> None:
    """Activate cheaply: trampolines now or at import, real patches at first use."""
    global _settings
    with _lock:
        if _settings is not None:
            _settings = settings
            return
        _settings = settings
    for module_name in POINTS:
        imports.when_imported(module_name, _install)


def disarm() -> "Optional[Settings]":
    """Remove the trampolines and the import hook; return the armed settings. Called by
    :func:`fire` (through ``patches.enable``), it leaves the trampolines where they are:
    the patches go over them, and a call from another thread meanwhile waits in
    :func:`fire` rather than reach an unpatched original."""
    global _settings
    imports.forget(_install)
    with _lock:
        if _handing_over:
            settings, _settings = _settings, None
            return settings
        while _installed:
            owner, name, original, stand_in = _installed.pop()
            point(stand_in, original)
            if vars(owner).get(name) is stand_in:
                setattr(owner, name, original)
        settings, _settings = _settings, None
        return settings


def armed_settings() -> "Optional[Settings]":
    return _settings


def fire() -> None:
    """First real use: swap the trampolines for the real patches.

    The first uses of other threads meanwhile wait for the patches on ``_firing``.
    ``_lock`` is not held while they go in: ``patches.enable`` waits for imports under way
    in other threads, and those take it (:func:`_install`) before they finish."""
    global _handing_over
    with _firing:
        with _lock:
            if _settings is None:
                return
            settings = _settings
            # Where a stand-in still stands, the patch replaces it and the stand-in forwards
            # to the patch; one that other code wrapped meanwhile forwards to the original,
            # and the patch goes around that code.
            in_place = [
                (owner, name, stand_in) for owner, name, _, stand_in in _installed
                if vars(owner).get(name) is stand_in
            ]  # fmt: skip
            _handing_over = True
        try:
            from .unshadowed import OwnImports

            with OwnImports():  # a token.py beside the script is not linecache's
                from . import patches

                patches.enable(settings)  # puts its patches over the stand-ins in place
        except Exception as exc:
            _handing_over = False
            disarm()
            sys.stderr.write(
                f"mpsanitizer: could not activate ({type(exc).__name__}: {exc}); "
                "running without it\n"
            )
            return
        finally:
            _handing_over = False
        with _lock:
            for owner, name, stand_in in in_place:
                patch = vars(owner).get(name)
                if patch is not None and not is_stand_in(patch):  # else enable() gave up
                    point(stand_in, patch)
            for owner, name, original, stand_in in _installed:
                if vars(owner).get(name) is stand_in:  # a point enable() did not patch
                    setattr(owner, name, original)
                if stand_in._mpsanitizer_target[0] is None:
                    point(stand_in, original)  # wrapped by other code meanwhile: around it
            del _installed[:]


def own_findings_line() -> "Optional[str]":
    """``mpsanitizer: findings in process N: ...``, or None when there were none."""
    handoff = sys.modules.get("mpsanitizer.handoff")
    findings = handoff.seen_findings() if handoff is not None else []
    if not findings:
        return None
    summarize = sys.modules["mpsanitizer.findings"].summarize  # handoff imported it
    return f"mpsanitizer: findings in process {_getpid()}: {summarize(findings)}"


def _say_summary() -> None:
    """At exit of the process the runner became. It imports nothing: running a module's
    code at exit makes CPython forget an uncaught KeyboardInterrupt, and the process would
    exit with status 1 instead of dying of SIGINT as python's does."""
    try:
        line = own_findings_line()
        if line is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    except Exception as exc:  # our fault, or a closed stream: never the exit status
        try:  # noqa: SIM105 (contextlib is not imported at exit, for the reason above)
            sys.stderr.write(f"mpsanitizer: internal error while summing up ({exc!r})\n")
        except Exception:
            pass


def command_line() -> "List[str]":
    """How this process was started: ``sys.orig_argv`` or, on 3.9, the kernel's record."""
    argv = getattr(sys, "orig_argv", None)
    if argv:
        return list(argv)
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            import os

            return [os.fsdecode(arg) for arg in cmdline.read().split(b"\0")[:-1]]
    except OSError:
        return []


def _is_multiprocessing_child() -> bool:
    """A spawn child or the fork server, started by multiprocessing or one of its copies:
    ``-c 'from multiprocessing.spawn import spawn_main; ...'``."""
    argv = command_line()
    return "--multiprocessing-fork" in argv or any(
        f"from {package}.{module} import" in arg
        for arg in argv
        for package in flavours.PACKAGES
        for module in ("spawn", "forkserver")
    )


def _is_helper_process() -> bool:
    """The resource tracker needs no sanitizer."""
    argv = command_line()
    return any(
        f"{package}.{tracker}" in arg
        for arg in argv
        for package in flavours.PACKAGES
        for tracker in ("resource_tracker", "semaphore_tracker")
    )


_read_environment = False


def activate_from_environment() -> None:
    """Run by the ``mpsanitizer.pth`` line at interpreter start when ``MPSANITIZE`` is
    set: arm with the environment's settings. A bad value is one line and exit 2."""
    global _read_environment
    import os

    from . import options

    if _read_environment or _is_helper_process():
        return  # a venv's lib64 link to lib: site runs our .pth line twice
    _read_environment = True
    try:
        settings = options.from_environment(os.environ)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith("mpsanitizer:"):
            message = f"mpsanitizer: error: {message}"
        if _is_multiprocessing_child():  # its parent took these settings: they held there
            sys.stderr.write(f"{message}; this process runs without mpsanitizer\n")
            return
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        os._exit(2)
    if settings is None:
        return
    try:
        if settings.log_path and settings.log_path not in os.environ.get(options.OPTIONS, ""):
            # a relative or ~ path: children resolve it from their own directory and home
            os.environ[options.OPTIONS] = options.to_environment(settings)[options.OPTIONS]
        arm(settings)
        if os.environ.pop(RUNNER, None) == str(os.getpid()):
            import atexit  # built in: this is the process ``python -m mpsanitizer`` became

            atexit.register(_say_summary)  # before the program's handlers: runs after them
    except Exception as exc:
        sys.stderr.write(
            f"mpsanitizer: could not activate ({type(exc).__name__}: {exc}); running without it\n"
        )
