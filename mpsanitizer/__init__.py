"""mpsanitizer: a runtime sanitizer for multiprocessing start methods.

It records where each Lock, Queue, Event, Condition, Barrier, Semaphore and
synchronized Value/Array was born (start method, pid, creation stack) and
checks what every starting child process receives against that child's start
method, raising :class:`ContextMismatchError` in the parent before a child
that could not survive the hand-off exists.

PYTEST_DONT_REWRITE
"""

from .config import DEFAULT_STACK_DEPTH, Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__version__ = "0.1.0"
__all__ = [
    "ContextMismatchError",
    "ContextMixingWarning",
    "Finding",
    "Settings",
    "disable",
    "enable",
    "is_enabled",
    "settings",
]


def enable(
    mode: str = "error",
    strict: bool = False,
    stack_depth: int = DEFAULT_STACK_DEPTH,
    log_path: "str | None" = None,
) -> None:
    """Turn the sanitizer on in this process (idempotent, thread-safe).

    ``mode="error"`` raises :class:`ContextMismatchError` for hand-offs CPython
    cannot survive; ``mode="warn"`` reports them as :class:`ContextMixingWarning`
    and lets CPython behave natively. ``strict=True`` makes every mixing finding
    as serious as a mismatch. ``stack_depth`` frames are kept per stack.
    ``log_path`` makes each process append its findings as JSON lines to
    ``<log_path>.<pid>``.
    Calling it again replaces the settings. Bad values raise ``ValueError``.
    """
    from . import patches

    patches.enable(Settings(mode=mode, strict=strict, stack_depth=stack_depth, log_path=log_path))


def disable() -> None:
    """Turn the sanitizer off: multiprocessing is restored exactly."""
    from . import patches

    patches.disable()


def is_enabled() -> bool:
    return settings() is not None


def settings() -> "Optional[Settings]":
    """The settings in force, or None when the sanitizer is off."""
    from . import lazy, patches

    return patches.current_settings() or lazy.armed_settings()


def __getattr__(name: str):
    if name in ("ContextMismatchError", "ContextMixingWarning"):
        from . import errors

        return getattr(errors, name)
    if name == "Finding":
        from .findings import Finding

        return Finding
    raise AttributeError(f"module 'mpsanitizer' has no attribute {name!r}")
