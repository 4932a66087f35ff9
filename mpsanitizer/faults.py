"""Our own faults: one line on stderr, and the user's program goes on."""

from __future__ import annotations

import contextlib
import sys


def report_fault(where: str, exc: BaseException) -> None:
    """Say that mpsanitizer failed while doing ``where``; never raise."""
    with contextlib.suppress(Exception):
        sys.stderr.write(
            f"mpsanitizer: internal error while {where} ({type(exc).__name__}: {exc}); "
            "continuing without this check\n"
        )
