"""Structured findings and the verdict rules that produce them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from . import kinds, origins
from .stacks import Frame

MISMATCH = "context-mismatch"
MIXING = "context-mixing"


@dataclass
class Finding:
    """One object handed to a process it is not safe (or not meant) for."""

    kind: str
    severity: str
    object_type: str
    factory: str
    path: str
    origin: Optional[str]
    target: str
    created_at: List[Frame] = field(default_factory=list)
    started_at: List[Frame] = field(default_factory=list)
    creator_pid: Optional[int] = None
    process_name: str = ""
    process_class: str = ""
    via: str = "Process"
    package: str = "multiprocessing"  # or a copy of it: multiprocess, billiard
    pid: int = field(default_factory=os.getpid)
    identity: Any = field(default=None, repr=False, compare=False)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "object_type": self.object_type,
            "factory": self.factory,
            "path": self.path,
            "origin_start_method": self.origin,
            "target_start_method": self.target,
            "created_at": [f.as_dict() for f in self.created_at],
            "started_at": [f.as_dict() for f in self.started_at],
            "creator_pid": self.creator_pid,
            "process_name": self.process_name,
            "process_class": self.process_class,
            "via": self.via,
            "package": self.package,
            "pid": self.pid,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Finding:
        """Rebuild a finding from its JSON record (another process's log)."""

        def frames(key: str) -> List[Frame]:
            return [Frame(f["file"], f["line"], f["function"]) for f in data.get(key) or []]

        return cls(
            kind=data["kind"],
            severity=data["severity"],
            object_type=data["object_type"],
            factory=data.get("factory") or data["object_type"],
            path=data["path"],
            origin=data.get("origin_start_method"),
            target=data["target_start_method"],
            created_at=frames("created_at"),
            started_at=frames("started_at"),
            creator_pid=data.get("creator_pid"),
            process_name=data.get("process_name", ""),
            process_class=data.get("process_class", ""),
            via=data.get("via", "Process"),
            package=data.get("package", "multiprocessing"),
            pid=data.get("pid", 0),
        )


@dataclass
class Verdict:
    """What one tracked object means for one target start method."""

    kind: str
    severity: str
    origin: Optional[origins.Origin]
    origin_method: Optional[str]
    # The SemLock to blame when it is not the object judged: one made on its own and
    # handed to a composite (``Value(lock=...)``, ``Condition(lock)``).
    culprit: Any = None


def judge(obj: Any, target: str) -> Optional[Verdict]:
    """Decide whether handing ``obj`` to a ``target`` child is an error, a warning or fine.

    The error rule is CPython's own ground truth: a SemLock whose semaphore was
    unlinked at creation (``name is None``, what the fork context does) cannot be
    reopened by a child that is not forked. It holds for objects created before
    the sanitizer was enabled too. The SemLock that decides names the origin.
    """
    locks = kinds.semlocks_of(obj)
    if not locks:
        return None
    # The composite's own SemLocks first: a SemLock handed to it is blamed only when
    # the composite itself would pass.
    pairs = sorted(
        ((lock, origins.origin_of(lock)) for lock in locks),
        key=lambda pair: pair[1] is not None and pair[0] is not obj and origins.made_alone(pair[1]),
    )
    if target != "fork":
        for lock, record in pairs:
            if _is_unlinked(lock) or (record is not None and record[origins.METHOD] == "fork"):
                return Verdict(MISMATCH, "error", record, "fork", _culprit(obj, lock, record))
    for lock, record in pairs:
        # One a fork child inherited with its record is its parent's hand-off, reported
        # there: handed on, it is as silent as one a spawn child received (no record).
        if (
            record is not None
            and record[origins.METHOD] != target
            and record[origins.PID] == origins.tracker.pid
        ):
            method = record[origins.METHOD]
            return Verdict(MIXING, "warning", record, method, _culprit(obj, lock, record))
    return None


def _culprit(obj: Any, lock: Any, record: Optional[origins.Origin]) -> Any:
    if lock is obj or record is None or not origins.made_alone(record):
        return None
    return lock


def _is_unlinked(lock: Any) -> bool:
    semlock = origins.read_attribute(lock, "_semlock")
    return semlock is not None and getattr(semlock, "name", "") is None


def summarize(findings: Sequence[Finding]) -> str:
    """``2 context-mismatch, 1 context-mixing``."""
    counts: Dict[str, int] = {}
    for finding in findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
