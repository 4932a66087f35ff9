"""Findings out of band: one JSON-lines file per process, ``<log_path>.<pid>``."""

from __future__ import annotations

import json
import os
import sys
from typing import Iterable

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
