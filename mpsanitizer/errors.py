"""The exception and the warning users catch and filter."""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Union

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
        return ContextMismatchError, (self.findings or str(self),)


def mismatch_error(
    findings: Sequence[Finding], raised_instead: Optional[BaseException] = None
) -> ContextMismatchError:
    """The error for ``findings``. Given ``raised_instead``, the error CPython's pickling
    raises first in this start without mpsanitizer (an unpicklable ``threading.Lock``), it
    is also of that error's class: the program's ``except TypeError`` around ``start()``
    goes on catching it."""
    cls = ContextMismatchError if raised_instead is None else _also_of(type(raised_instead))
    return cls(findings)


# Modules whose exception classes may be mixed in: their construction runs no program code.
_NATIVE_MODULES = frozenset(("builtins", "_pickle", "pickle"))
_also: Dict[type, type] = {}


def _also_of(native: type) -> type:
    """ContextMismatchError that is also a ``native``, where the two classes can be mixed
    and still show and behave as a ContextMismatchError; else ContextMismatchError."""
    found = _also.get(native)
    if found is not None:
        return found
    found = ContextMismatchError
    if (
        issubclass(native, Exception)
        and not issubclass(ContextMismatchError, native)  # RuntimeError: it already is one
        and getattr(native, "__module__", None) in _NATIVE_MODULES
    ):
        namespace = {
            "__module__": "mpsanitizer",
            "__qualname__": "ContextMismatchError",
            "__doc__": ContextMismatchError.__doc__,
        }
        try:
            mixed = type("ContextMismatchError", (ContextMismatchError, native), namespace)
            probe = mixed("probe")
            if str(probe) == "probe" and probe.args == ("probe",):  # KeyError quotes its str
                found = mixed
        except Exception:  # an MRO or a layout that cannot be mixed
            pass
    if len(_also) < 100:
        _also[native] = found
    return found


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
