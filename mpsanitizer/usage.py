"""The runner's own lines: a bad command line, and what it says on the program's streams."""

from __future__ import annotations

import contextlib
import sys


class UsageError(Exception):
    """Bad command line: one line and exit status 2."""


def say(line: str, stream: str = "stderr") -> None:
    """Write a line of ours: whatever the program did to the stream (closed it, replaced
    it, set it to None), our output never changes the exit status."""
    with contextlib.suppress(Exception):
        out = getattr(sys, stream)
        out.write(line + "\n")
        out.flush()
