"""Findings out of band: one JSON-lines file per process, ``<log_path>.<pid>``."""

from __future__ import annotations

import glob
import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # the runner's reader imports no typing, dataclasses, inspect, threading
    from typing import Any, Dict, Iterable, List

    from .findings import Finding

SCHEMA_VERSION = 1


def record(finding: Finding) -> dict:
    """The JSON record of one finding (schema in docs/json-log.md)."""
    data = finding.as_dict()
    data["schema"] = SCHEMA_VERSION
    data["parent_pid"] = os.getppid()
    data["reporting_process"] = _current_process_name()
    return data


def _current_process_name() -> str:
    process = sys.modules.get("multiprocessing.process")
    try:
        return process.current_process().name if process else "MainProcess"
    except Exception:
        return ""


def write(prefix: str, findings: Iterable[Finding]) -> None:
    """Append the findings to this process's file; never raise into the program."""
    path = f"{prefix}.{os.getpid()}"
    try:
        lines = "".join(json.dumps(record(f), sort_keys=True) + "\n" for f in findings)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(lines)
    except Exception as exc:
        sys.stderr.write(f"mpsanitizer: could not write findings to {path} ({exc})\n")


class Reader:
    """Reads the records that the processes of one log prefix append, each one once."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.offsets: Dict[str, int] = {}

    def mark(self) -> None:
        """Remember how far every log file has been read."""
        for path in glob.glob(glob.escape(self.prefix) + ".*"):
            self.offsets[path] = os.path.getsize(path)

    def new_records(self) -> List[Dict[str, Any]]:
        records = []
        for path in sorted(glob.glob(glob.escape(self.prefix) + ".*")):
            start = self.offsets.get(path, 0)
            with open(path, encoding="utf-8") as handle:
                handle.seek(start)
                data = handle.read()
            complete = data[: data.rfind("\n") + 1]
            self.offsets[path] = start + len(complete.encode("utf-8"))
            records.extend(json.loads(line) for line in complete.splitlines() if line.strip())
        return records
