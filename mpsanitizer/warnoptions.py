"""``-W`` options and ``PYTHONWARNINGS`` entries that name our warning
(``-W error::mpsanitizer.ContextMixingWarning``): CPython reads them before any
installed package can be imported, says ``Invalid -W option ignored`` and drops
them. They take effect when the sanitizer is enabled, put first among the
filters, where CPython would have put them."""

from __future__ import annotations

import sys
import warnings

from .faults import report_fault

_applied = False


def apply_deferred() -> None:
    """Install the filters of the options that name an mpsanitizer category, once."""
    global _applied
    if _applied:
        return
    _applied = True
    try:
        ours = [option for option in sys.warnoptions if _names_ours(option)]
        if ours:
            from . import errors  # noqa: F401  (the categories exist from here on)
    except Exception as exc:
        report_fault("reading the -W options", exc)
        return
    for option in ours:
        try:
            warnings._setoption(option)  # type: ignore[attr-defined]
        except Exception:  # malformed in another way: CPython said so at startup
            continue


def _names_ours(option: str) -> bool:
    fields = option.split(":")
    return len(fields) >= 3 and fields[2].strip().startswith("mpsanitizer.")
