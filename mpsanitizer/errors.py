"""The exception and the warning users catch and filter."""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Union

from .findings import Finding
from .report import format_report


class ContextMismatchError(RuntimeError):
    """An object from one multiprocessing context was handed to a process that
    cannot use it. Raised in the parent, before the child exists.

    ``findings`` holds every offender of that start, structured.
    """

    __module__ = "mpsanitizer"

    def __init__(self, findings: Union[Sequence[Finding], str]) -> None:
        if isinstance(findings, str):  # rebuilt from its text (pytest-xdist does this)
            self.findings: List[Finding] = []
            super().__init__(findings)
            return
        self.findings = list(findings)
        super().__init__(format_report(self.findings))

    def __reduce__(self):  # type: ignore[override]
        return type(self), (self.findings or str(self),)


class ContextMixingWarning(RuntimeWarning):
    """An object crossed start methods in a way CPython accepts today but that
    ties the program to both contexts. ``finding`` holds the details."""

    __module__ = "mpsanitizer"

    def __init__(self, finding: Union[Finding, str]) -> None:
        if isinstance(finding, str):  # rebuilt from its text (pytest-xdist does this)
            self.finding: Optional[Finding] = None
            self.findings: List[Finding] = []
            super().__init__(finding)
            return
        self.finding = finding
        self.findings = [finding]
        super().__init__(format_report(self.findings))

    def __reduce__(self):  # type: ignore[override]
        return type(self), (self.finding if self.finding is not None else str(self),)


def warn(finding: Finding, unknown_site: str = "<unknown>") -> None:
    """Issue ``finding`` as a ContextMixingWarning attributed to the line that started the
    process, so that warning filters and pytest's summary see it there."""
    site = finding.started_at[-1] if finding.started_at else None
    warnings.warn_explicit(
        ContextMixingWarning(finding),
        ContextMixingWarning,
        site.filename if site else unknown_site,
        site.lineno if site else 0,
    )
