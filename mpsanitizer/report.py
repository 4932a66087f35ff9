"""The human report, in the shape users know from tracemalloc and the sanitizers."""

from __future__ import annotations

import sys
from typing import List, Sequence

from .findings import MISMATCH, Finding
from .origins import STANDARD_METHODS
from .stacks import format_frames, short_location

NATIVE_CHECK = (3, 11, 5)
_NATIVE_MESSAGE = (
    "RuntimeError: A SemLock created in a fork context is being shared with a process "
    "in a spawn context"
)


def native_behaviour(finding: Finding, version: Sequence[int] = tuple(sys.version_info[:3])) -> str:
    """One sentence on what CPython (or the copy of multiprocessing the object comes from)
    does with this hand-off when unchecked."""
    v = ".".join(map(str, version))
    if finding.kind != MISMATCH:  # a mixing finding, whether strict made it an error or not
        return (
            f"CPython {v} accepts this hand-off, but the program now depends on two start "
            "methods: if the object's context becomes 'fork' (the Linux default up to 3.13) while "
            "the process needs a fresh interpreter ('forkserver' is the Linux default from 3.14), "
            "it breaks."
        )
    package = finding.package
    standard = package == "multiprocessing"
    if checks_fork_context(package, version):
        extra = (
            f' (it says "spawn" for this {finding.target} process)'
            if finding.target != "spawn"
            else ""
        )
        who = f"CPython {v}" if standard else f"{package} on CPython {v}"
        return (
            f'Without mpsanitizer, {who} raises "{_NATIVE_MESSAGE}"{extra}, '
            "naming no object, no creation site and only the first offender."
        )
    via = finding.via
    if via == "Pool":
        outcome = (
            "a pool worker that uses the object would die with SIGSEGV, and the pool would "
            "respawn such workers forever, its tasks never returning"
        )
    elif via == "ProcessPoolExecutor":
        outcome = (
            "a worker that uses the object would die with SIGSEGV, and the executor would "
            "raise BrokenProcessPool"
        )
    elif via == "loky":
        outcome = (
            "a worker that uses the object would die with SIGSEGV, and the executor would "
            "raise TerminatedWorkerError"
        )
    else:
        outcome = "the child would die with SIGSEGV (exit code -11) when it uses the object"
    nothing = "CPython checks nothing before 3.11.5" if standard else f"{package} checks nothing"
    return f"Without mpsanitizer, on CPython {v} {outcome}; {nothing}."


def checks_fork_context(package: str, version: Sequence[int]) -> bool:
    """Whether ``package`` refuses a fork-born SemLock itself (CPython from 3.11.5, and the
    copies that took that check over): read from its ``SemLock.__getstate__``."""
    if package == "multiprocessing":
        return tuple(version) >= NATIVE_CHECK
    synchronize = sys.modules.get(f"{package}.synchronize")
    getstate = getattr(getattr(synchronize, "SemLock", None), "__getstate__", None)
    while hasattr(getstate, "__wrapped__"):  # our own interception
        getstate = getstate.__wrapped__  # type: ignore[union-attr]
    code = getattr(getstate, "__code__", None)
    return code is not None and any("fork_ctx" in name for name in code.co_names)


def fix(finding: Finding) -> List[str]:
    """The exact code to copy."""
    factory = finding.factory
    via = finding.via
    package = finding.package
    made = f"ctx.{factory}(...)"
    if finding.object_type != factory:  # the program's own subclass: no ctx method makes it
        factory = finding.object_type
        made = f"{factory}(..., ctx=ctx)"
    if finding.target not in STANDARD_METHODS:  # a library's own start method ("loky")
        return [
            f"create the {factory} from a context whose processes can open it "
            f"(the {finding.target!r} processes are not forked from this one):",
            f"    ctx = {package}.get_context('spawn'); {made}",
            f"or use the {factory} the library provides for its processes, if it has one",
        ]
    create = [
        f"create the {factory} from the process's context:",
        f"    ctx = {package}.get_context({finding.target!r}); {made}",
    ]
    if finding.origin not in STANDARD_METHODS:  # a context of the program's own naming
        return [*create, f"or start the {via} from the context that made the {factory}"]
    origin = f"get_context({finding.origin!r})"
    if via == "ProcessPoolExecutor":
        start = f"ProcessPoolExecutor(mp_context=multiprocessing.{origin}, ...)"
    elif via == "Manager":  # a BaseManager subclass of the program's is not ctx.Manager()
        start = (
            f"{package}.{origin}.Manager(), or for a manager class of your own"
            f"\n             MyManager(ctx={package}.{origin})"
        )
    else:
        start = f"{package}.{origin}.{via}(...)"
    return [*create, f"or start the {via} from the {factory}'s context:", f"    {start}"]


_PATH_ENDS = 60  # characters kept at each end of a path too long for one line


def _shortened(path: str) -> str:
    """A path as a report line shows it: one through 5,000 nested lists keeps its ends."""
    if len(path) <= 3 * _PATH_ENDS:
        return path
    cut = len(path) - 2 * _PATH_ENDS
    return f"{path[:_PATH_ENDS]}...({cut} characters)...{path[-_PATH_ENDS:]}"


def format_report(findings: Sequence[Finding]) -> str:
    """The whole report for the findings of one process start."""
    first = findings[0]
    label = "ERROR" if first.is_error else "WARNING"
    noun = "object" if len(findings) == 1 else "objects"
    if first.kind == MISMATCH:
        verb = "cannot reach it"
    else:
        verb = "belongs to another context" if len(findings) == 1 else "belong to another context"
    lines = [
        f"mpsanitizer: {label}: {first.kind}: {len(findings)} {noun} handed to "
        f"{first.process_class} {first.process_name!r} (start method {first.target!r}) " + verb
    ]
    for n, finding in enumerate(findings, 1):
        origin = f"a {finding.origin!r} context" if finding.origin else "an unknown context"
        pid = f", pid {finding.creator_pid}" if finding.creator_pid else ""
        lines.append("")
        path = _shortened(finding.path)
        lines.append(f"  #{n} {finding.object_type} at {path}, created in {origin}{pid}")
        if finding.created_at:
            lines.append("    Object created at (most recent call last):")
            lines.extend(format_frames(finding.created_at, "      "))
        else:
            lines.append("    Object created before mpsanitizer was enabled: no creation stack.")
        lines.append("    fix: " + "\n         ".join(fix(finding)))
    lines.append("")
    started = f"  {first.process_class} {first.process_name!r}"
    if first.started_at:
        lines.append(f"{started} started at (most recent call last):")
        lines.extend(format_frames(first.started_at, "    "))
    else:  # a library's own thread started it (a pool's, torch's parallel start)
        lines.append(f"{started} started with no frame of the program on the stack")
    lines.append("  " + native_behaviour(first))
    lines.append(summary_line(findings))
    return "\n".join(lines)


def summary_line(findings: Sequence[Finding]) -> str:
    first = findings[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return (
        f"SUMMARY: mpsanitizer: {first.kind} {short_location(first.created_at)} -> "
        f"{short_location(first.started_at)}{more}"
    )
