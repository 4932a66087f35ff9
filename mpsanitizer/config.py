"""The settings that govern checks, validated in one place.

Imported at interpreter start in every activated process: stdlib-light on purpose
(no dataclasses, no typing at run time).
"""

import os

MODES = ("error", "warn")
DEFAULT_STACK_DEPTH = 8
MAX_STACK_DEPTH = 256


def checked_log_path(value: object) -> str:
    """``value`` as an absolute path prefix, or ValueError: children receive it in
    ``MPSANITIZE_OPTIONS``, where ``:`` and ``,`` separate the options."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"log_path must be a file path prefix, not {value!r}")
    path = os.path.abspath(os.path.expanduser(value))
    separators = [char for char in ":," if char in path]
    if separators:
        raise ValueError(
            f"log_path {path!r} contains {' and '.join(map(repr, separators))}: child processes "
            "receive it in MPSANITIZE_OPTIONS, where ':' and ',' separate options"
        )
    directory = os.path.dirname(path)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        # else every process would drop its findings' records without a word
        raise ValueError(f"log_path {path!r}: {directory!r} is not a writable directory")
    return path


class Settings:
    """How findings are reported (immutable).

    ``mode``: ``"error"`` raises :class:`ContextMismatchError` for hand-offs that
    CPython cannot survive; ``"warn"`` reports them as warnings and lets CPython
    behave natively. ``strict`` turns every other mixing warning into an error.
    ``stack_depth``: frames kept per creation and start stack.
    ``log_path``: when set, each process appends one JSON line per finding to
    ``<log_path>.<pid>``.
    """

    __slots__ = ("log_path", "mode", "stack_depth", "strict")

    mode: str
    strict: bool
    stack_depth: int
    log_path: "str | None"

    def __init__(
        self,
        mode: str = "error",
        strict: bool = False,
        stack_depth: int = DEFAULT_STACK_DEPTH,
        log_path: "str | None" = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mpsanitizer: mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not isinstance(strict, bool):
            raise ValueError(f"mpsanitizer: strict must be True or False, not {strict!r}")
        depth = stack_depth
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int)
            or not 1 <= depth <= MAX_STACK_DEPTH
        ):
            raise ValueError(
                f"mpsanitizer: stack_depth must be an integer from 1 to {MAX_STACK_DEPTH}, "
                f"not {depth!r}"
            )
        if log_path is not None:
            try:
                log_path = checked_log_path(log_path)
            except ValueError as exc:
                raise ValueError(f"mpsanitizer: {exc}") from None
        object.__setattr__(self, "log_path", log_path)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "strict", strict)
        object.__setattr__(self, "stack_depth", depth)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Settings are immutable")

    def _key(self) -> tuple:
        return (self.mode, self.strict, self.stack_depth, self.log_path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Settings(mode={self.mode!r}, strict={self.strict!r}, "
            f"stack_depth={self.stack_depth!r}, log_path={self.log_path!r})"
        )
