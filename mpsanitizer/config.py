"""The settings that govern checks, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("error", "warn")
DEFAULT_STACK_DEPTH = 8
MAX_STACK_DEPTH = 256


@dataclass(frozen=True)
class Settings:
    """How findings are reported.

    ``mode``: ``"error"`` raises :class:`ContextMismatchError` for hand-offs that
    CPython cannot survive; ``"warn"`` reports them as warnings and lets CPython
    behave natively. ``strict`` turns every other mixing warning into an error.
    ``stack_depth``: frames kept per creation and start stack.
    """

    mode: str = "error"
    strict: bool = False
    stack_depth: int = DEFAULT_STACK_DEPTH

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"mpsanitizer: mode must be one of {', '.join(MODES)}, not {self.mode!r}"
            )
        if not isinstance(self.strict, bool):
            raise ValueError(f"mpsanitizer: strict must be True or False, not {self.strict!r}")
        depth = self.stack_depth
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int)
            or not 1 <= depth <= MAX_STACK_DEPTH
        ):
            raise ValueError(
                f"mpsanitizer: stack_depth must be an integer from 1 to {MAX_STACK_DEPTH}, "
                f"not {depth!r}"
            )
