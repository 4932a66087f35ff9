"""The check at hand-off: every tracked object a starting child receives,
judged against the child's real start method.

spawn and forkserver pickle the process object before the child exists: the
check rides on that very pickling (``reduction.dump``), so nothing is pickled
twice. fork pickles nothing: a bounded walk of the process object does. A
library's own Popen (loky's) pickles its own way: its SemLocks are judged where
every pickler ends, ``SemLock.__getstate__``.
"""

from __future__ import annotations

import collections
import copyreg
import functools
import io
import pickle
import sys
import threading
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import dump_hook, flavours, forkwalk, jsonlog, kinds, origins, report, stacks, typeinfo, walk
from .config import Settings
from .errors import ContextMismatchError, ContextMixingWarning, mismatch_error, warn
from .faults import report_fault
from .findings import MISMATCH, Finding, Verdict, judge

Hit = Tuple[Any, Verdict]  # a tracked object and what it means for the child

_seen: List[Finding] = []


def seen_findings() -> List[Finding]:
    """Findings reported in this process so far (kept for the exit summary)."""
    return list(_seen)


class _Scanning:
    """Mixed into the ForkingPickler the start would use: notes tracked objects on the way.

    Tracked classes of the starting package get an entry in this pickler's own
    ``dispatch_table`` (a copy ForkingPickler makes per pickler), so every other object
    is pickled at C speed with no Python call; another package's primitive (a standard
    Lock in a multiprocess start) is left to that package's own refusal. Output is
    byte-identical unless an error-class offender is elided, so that the scan goes on and
    reports every offender.
    """

    dispatch_table: Dict[type, Any]

    def __init__(
        self, file: Any, protocol: Optional[int], target: str, elide: bool, package: str
    ) -> None:
        super().__init__(file, protocol)  # type: ignore[call-arg]
        self.target = target
        self.elide = elide
        self.hits: List[Hit] = []
        # ids of the objects inside those judged (every one is held by what is pickled):
        # whether to elide them when they are pickled.
        self.covered: Dict[int, bool] = {}
        self.owners: Dict[int, Any] = {}  # id of an inner object -> its self-pickling owner
        self.fault: Optional[BaseException] = None
        self.elided = 0  # error-class offenders pickled as 0, so that the scan goes on
        # Whether CPython's own pickling would have refused one of them (3.11.5+): then its
        # RuntimeError, not a later failure of the pickling, is what the start raises natively.
        self.refused_natively = False
        self._refuses = elide and report.checks_fork_context(package, sys.version_info)
        self._protocol = _effective_protocol(protocol)
        # Our own copy: a ForkingPickler of the program's may share a table (copyreg's), or
        # have none (a plain pickle.Pickler put in its place reads copyreg's).
        shared = getattr(self, "dispatch_table", copyreg.dispatch_table)
        table = dict(shared) if type(shared) is dict else collections.ChainMap({}, shared)
        self.dispatch_table = table
        for cls in kinds.tracked_classes():
            if flavours.package_of_class(cls) == package:
                table[cls] = functools.partial(self._reduce_tracked, table.get(cls))

    def _reduce_tracked(self, native: Optional[Callable], obj: Any) -> Any:
        try:
            if _reduces_itself(type(obj), native):
                self._own(obj)
            elif self._note(obj):
                self.elided += 1
                self.refused_natively = self._refuses
                return int, ()
        except Exception as exc:
            self.fault = exc
        return native(obj) if native is not None else obj.__reduce_ex__(self._protocol)

    def release(self) -> None:
        """Drop what the pickling holds: its memo keeps every pickled object alive, and
        the dispatch entries point back at the pickler (a cycle only gc would free)."""
        self.clear_memo()  # type: ignore[attr-defined]
        self.dispatch_table.clear()
        self.covered.clear()
        self.owners.clear()

    def _own(self, obj: Any) -> None:
        """A composite that pickles itself its own way: what it holds is judged if and
        when it is pickled, and then reported as this composite."""
        for inner in kinds.nested(obj)[1:]:
            self.owners.setdefault(id(inner), obj)

    def _note(self, obj: Any) -> bool:
        """Record a finding for ``obj``; True when it must be elided."""
        key = id(obj)
        if key in self.covered:  # inside an object already judged
            return self.covered[key]
        owner = self.owners.get(key)
        if owner is not None and id(owner) not in self.covered:
            self._note(owner)
            return self.covered[key]
        verdict = judge(obj, self.target)
        elide = verdict is not None and self.elide and verdict.severity == "error"
        for inner in kinds.nested(obj):
            self.covered[id(inner)] = elide
        if verdict is not None:
            self.hits.append((obj, verdict))
        return elide


class _Output:
    """Where the scanning pickler writes: the start's own file, rewound if what was
    written must be taken back (error mode), or a buffer copied to it when that file
    cannot be rewound."""

    def __init__(self, file: Any, elide: bool) -> None:
        self.target, self.elide = file, elide
        self.file, self.start = file, None
        if elide:
            try:
                self.start = file.tell() if file.seekable() else None
            except Exception:
                self.start = None
            if self.start is None:
                self.file = io.BytesIO()

    def take_back(self) -> None:
        if self.file is self.target and self.start is not None:
            self.target.seek(self.start)
            self.target.truncate()

    def keep(self) -> None:
        if self.file is not self.target:
            self.target.write(self.file.getvalue())


_self_reducing: Dict[type, bool] = {}


def _reduces_itself(cls: type, native: Optional[Callable]) -> bool:
    """A composite (a Queue, an Event...) whose class pickles it its own way: by a reducer
    registered for it, or a ``__reduce__``/``__getstate__`` below multiprocessing's class.
    What it holds is not what the child gets: its inner SemLocks are judged if and when
    they are pickled. So is a SemLock of a subclass of the program's that pickles itself
    (as a ``threading.Lock``, say); one of multiprocessing's own classes is always judged."""
    try:
        return _self_reducing[cls]
    except KeyError:
        pass
    ours = flavours.package_of(typeinfo.module_of(cls)) is not None
    own = native is not None and not (ours and issubclass(cls, kinds.semlock_classes()))
    for klass in typeinfo.mro(cls):
        if flavours.package_of(typeinfo.module_of(klass)) is not None:
            break
        namespace = typeinfo.namespace(klass)
        own = own or any(name in namespace for name in walk.REDUCTIONS)
    if len(_self_reducing) < 10_000:
        _self_reducing[cls] = own
    return own


_scanning_classes: Dict[type, type] = {}


def scanning_pickler(package: str, *args: Any, **kwargs: Any) -> Any:
    """A scanning pickler over ``<package>.reduction.ForkingPickler`` as it is now: ``dump``
    looks the name up at every call, and a program or library may have replaced it."""
    base = sys.modules[f"{package}.reduction"].ForkingPickler
    cls = _scanning_classes.get(base)
    if cls is None:
        cls = type(f"Scanning{base.__name__}", (_Scanning, base), {})
        if len(_scanning_classes) < 100:
            _scanning_classes[base] = cls
    return cls(*args, **kwargs)


def can_scan(package: str) -> bool:
    """Whether ``<package>.reduction.ForkingPickler`` is a pickler class the scanning one
    can be made from: a program may have put a factory function or a ``partial`` there.
    Then CPython's own dump runs, and ``SemLock.__getstate__`` judges what it sends."""
    base = getattr(sys.modules[f"{package}.reduction"], "ForkingPickler", None)
    return isinstance(base, type) and issubclass(base, (pickle.Pickler, pickle._Pickler))


def _effective_protocol(protocol: Optional[int]) -> int:
    if protocol is None:
        return pickle.DEFAULT_PROTOCOL
    return pickle.HIGHEST_PROTOCOL if protocol < 0 else protocol


class DumpScan:
    """One process pickled for a start, through the scanning pickler: the steps of the
    wrapper :mod:`mpsanitizer.dump_hook` makes, in that wrapper's own frame.

    In error mode offenders are pickled as 0 so that the scan goes on; if the report
    then cannot be made, what was written is taken back and CPython pickles the
    process itself (``again``): the child never gets those zeros, and 3.11.5+ refuses
    natively."""

    def __init__(
        self, checker: Checker, popen: Any, package: str, obj: Any, file: Any, protocol: Any
    ) -> None:
        self.checker, self.package, self.obj = checker, package, obj
        self.file, self.protocol = file, protocol
        self.target = getattr(popen, "method", None) or "spawn"
        self.pickler: Optional[Any] = None
        self.out: Optional[_Output] = None
        self.again = False
        self.popen = popen
        self._native = False  # CPython's own pickling: nothing of it is judged
        self._thread = threading.get_ident()
        _dumping[self._thread] = self

    def judged(self, semlock: Any, popen: Any) -> bool:
        """Whether ``semlock``, being pickled for ``popen``'s start in this thread, is this
        scan's to judge (or to leave alone), not a nested pickling's (a ``__reduce__``
        that calls ``ForkingPickler.dumps``)."""
        if popen is not self.popen:
            return False
        pickler = self.pickler
        if self._native or pickler is None:
            return self._native
        return pickler.fault is not None or id(semlock) in pickler.covered  # a fault: said once

    def scanning(self) -> Tuple[Callable, Any, Any, Any]:
        """(pickler class, obj, file, protocol) for the pickling call: the scanning
        pickler, or CPython's own when it cannot be made."""
        try:
            self.out = _Output(self.file, elide=self.checker.settings.mode == "error")
            return self._scanning_pickler, self.obj, self.out.file, self.protocol
        except Exception as exc:
            report_fault("preparing the start check", exc)
            return self.native()

    def _scanning_pickler(self, file: Any, protocol: Any) -> Any:
        assert self.out is not None
        try:
            self.pickler = scanning_pickler(
                self.package, file, protocol, self.target, self.out.elide, self.package
            )
        except Exception as exc:  # a pickler class of the program's we cannot scan with
            report_fault("preparing the start check", exc)
            self.again = True  # CPython's own pickler pickles it, as without us
            raise
        return self.pickler

    def native(self) -> Tuple[Callable, Any, Any, Any]:
        """The same for CPython's own pickling, what was written taken back."""
        self._native = True
        if self.out is not None:
            self.out.take_back()
        forking_pickler = sys.modules[f"{self.package}.reduction"].ForkingPickler
        return forking_pickler, self.obj, self.file, self.protocol

    def failed(self, native: BaseException) -> Optional[BaseException]:
        """The pickling raised ``native`` (an unpicklable argument, CPython's own check in
        warn mode): report what was seen; our error to raise, else ``native`` stands."""
        pickler = self.pickler
        if pickler is None:
            return None
        pickler.release()
        if isinstance(native, ContextMismatchError):  # judged where it was pickled
            return None
        dump_hook.cut_our_frames(native)  # CPython's error, as our report's cause too
        checker = self.checker
        hits = checker._all_findings(self.obj, self.target, self.package, pickler.hits)
        raised_instead = None if pickler.refused_natively else native
        error = checker._deliver(hits, native, raised_instead)
        if error is None:
            self.again = bool(pickler.elided)  # we hid an offender: let CPython see them all
        return error

    def succeeded(self) -> Optional[BaseException]:
        pickler = self.pickler
        if pickler is None:
            return None
        pickler.release()
        if pickler.fault is not None:
            report_fault("scanning a process's arguments", pickler.fault)
        error = self.checker._deliver(
            self.checker._safe_findings(self.obj, self.target, pickler.hits)
        )
        if error is None and pickler.elided:  # no report could be made
            self.again = True
        elif error is None and self.out is not None:
            self.out.keep()
        return error

    def end(self) -> None:
        _dumping.pop(self._thread, None)


class Checker:
    """Holds the settings and turns hits into findings, warnings and errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._warned: Dict[Tuple[Any, ...], None] = {}

    def reset_after_fork(self) -> None:
        self._warned = {}
        del _seen[:]

    # -- the start-time interceptions ---------------------------------------

    def fork_found(self, popen: Any, proc: Any, found: List[Any]) -> Optional[BaseException]:
        """fork's ``Popen._launch(popen, proc)``, before ``os.fork()``, once the walk
        (:func:`mpsanitizer.forkwalk.fork_check`) found tracked objects the child receives:
        judged, reported, and the error to raise returned. Everything it makes is freed
        before the fork: each object freed after it would write to a page the child now
        shares, and copy it."""
        findings: List[Finding] = []
        try:
            hits: List[Hit] = []
            for obj in found:
                verdict = judge(obj, "fork")
                if verdict is not None:
                    hits.append((obj, verdict))  # its path is looked up for the report
            if hits:
                findings = self._findings(proc, "fork", hits)
        except Exception as exc:
            report_fault("checking a fork start", exc)
        return self._deliver(findings) if findings else None

    def begin_dump(self, wrapped: Callable, args: tuple, kwargs: Dict) -> Optional[DumpScan]:
        """``reduction.dump(*args, **kwargs)``: the scan of the pickling a spawn or
        forkserver start performs, or None when it is no process start
        (:mod:`mpsanitizer.dump_hook` runs it)."""
        try:
            obj, file, protocol = dump_hook.arguments(*args, **kwargs)
        except TypeError:
            return None  # the call fails natively, as it would
        module = getattr(wrapped, "__module__", None)
        package = flavours.package_of(module)
        if package is None or module != f"{package}.reduction":
            return None  # the program's own dump: it runs, and SemLock.__getstate__ judges
        popen = flavours.spawning_popen(package)
        if popen is None or not _is_process(obj) or not can_scan(package):
            return None
        return DumpScan(self, popen, package, obj, file, protocol)

    def semlock_getstate(self, wrapped: Callable, instance: Any, args: tuple, kwargs: Dict) -> Any:
        """``SemLock.__getstate__``: a SemLock pickled for a process start by some other
        pickling than ``reduction.dump``'s: a library's own Popen (loky's, with
        cloudpickle) or Process class. Every pickler ends here for a SemLock."""
        package = flavours.package_of(getattr(wrapped, "__module__", None)) or flavours.STANDARD
        popen = flavours.spawning_popen(package)  # what this package's own check reads
        scan = _dumping.get(threading.get_ident())
        if popen is not None and not (scan is not None and scan.judged(instance, popen)):
            error = self._check_pickled_semlock(instance, popen, package)
            if error is not None:
                raise error
        return wrapped(*args, **kwargs)

    # -- checks -------------------------------------------------------------

    def _all_findings(self, proc: Any, target: str, package: str, hits: List[Hit]) -> List[Finding]:
        """The findings of a pickling that failed: its hits, and the offenders it did not
        reach before it failed."""
        try:
            seen = {id(inner) for hit in hits for inner in kinds.nested(hit[0])}
            by_value = not _functions_by_name(package)
            for hit in _every_offender(proc, target, package, by_value):
                if not any(id(inner) in seen for inner in kinds.nested(hit[0])):
                    hits.append(hit)
        except Exception as exc:
            report_fault("scanning a process's arguments", exc)
        return self._safe_findings(proc, target, hits)

    def _check_pickled_semlock(
        self, lock: Any, popen: Any, package: str
    ) -> Optional[BaseException]:
        """Judge a SemLock some other pickling sends to a child; on a finding, judge
        everything that start sends, so that one report names every offender."""
        target = getattr(popen, "method", None) or "spawn"
        try:
            if not _reportable(judge(lock, target), target):
                return None
            proc = _starting_process()
            hits = _every_offender(proc, target, package) if proc is not None else []
            if not any(lock in kinds.nested(obj) for obj, _ in hits):
                hits.append((lock, judge(lock, target)))  # type: ignore[arg-type]
            findings = self._findings(proc, target, hits, popen)
        except Exception as exc:
            report_fault("checking a pickled SemLock", exc)
            return None
        return self._deliver(findings)

    def _safe_findings(self, proc: Any, target: str, hits: List[Hit]) -> List[Finding]:
        try:
            return self._findings(proc, target, hits)
        except Exception as exc:
            report_fault("building a report", exc)
            return []

    def _findings(
        self, proc: Any, target: str, hits: List[Hit], popen: Any = None
    ) -> List[Finding]:
        """``proc``: the process object, None when it could not be found (then ``popen``
        names what pickled the objects)."""
        if not hits:  # the common case: no stack is looked at
            return []
        started = stacks.resolve(stacks.capture(self.settings.stack_depth, _start_call_depth()))
        site = started[-1] if started else None
        hits = [h for h in hits if self._raises(h[1]) or not self._warned_before(h, target, site)]
        if not hits:  # each was warned about at this site: no path to look up again
            return []
        shown = [obj if verdict.culprit is None else verdict.culprit for obj, verdict in hits]
        missing = {id(obj): obj for obj in shown}
        pickled = target != "fork"  # a fork child is pickled nothing: run no reduction
        paths = walk.locate(proc, missing, reduce=pickled) if proc is not None else {}
        unplaced = f"(inside what {type(popen).__module__}.{type(popen).__qualname__} pickles)"
        unplaced = "(inside what the child receives)" if proc is not None else unplaced
        via, _ = walk.process_kind(proc) if proc is not None else ("Process", None)
        findings = []
        for obj, (_, verdict) in zip(shown, hits):
            severity = verdict.severity
            if self.settings.strict:
                severity = "error"
            origin = verdict.origin
            identity = _identity(obj, verdict)
            findings.append(
                Finding(
                    kind=verdict.kind,
                    severity=severity,
                    object_type=kinds.display_name(obj),
                    factory=kinds.factory_name(obj),
                    path=paths.get(id(obj), unplaced),
                    origin=verdict.origin_method,
                    target=target,
                    created_at=stacks.resolve(origin[origins.STACK :]) if origin else [],
                    started_at=started,
                    creator_pid=origin[origins.PID] if origin else None,
                    process_name=getattr(proc, "_name", "") or "",
                    process_class=typeinfo.name(type(proc if proc is not None else popen)),
                    via=via,
                    package=flavours.package_of_class(type(obj)),
                    identity=identity,
                )
            )
        return findings

    # -- delivery -------------------------------------------------------

    def _deliver(
        self,
        findings: List[Finding],
        cause: Optional[BaseException] = None,
        raised_instead: Optional[BaseException] = None,
    ) -> Optional[BaseException]:
        """Record and emit the findings (a warning once per hand-off); return the error
        to raise, if any (see :func:`mismatch_error` for ``raised_instead``): also a
        warning that the warning filters turned into one, which the start then raises
        as it raises ours, without our frames under it."""
        raising = self.settings.mode == "error"
        findings = [f for f in findings if (raising and f.is_error) or self._first_time(f)]
        errors = [f for f in findings if raising and f.is_error]
        warned = [f for f in findings if not (raising and f.is_error)]
        if not findings:
            return None
        if len(_seen) < 10_000:
            _seen.extend(findings)
        if self.settings.log_path:
            jsonlog.write(self.settings.log_path, findings)
        refused: Optional[BaseException] = None
        for finding in warned:
            try:
                warn(finding)
            except ContextMixingWarning as exc:  # -W error: the first one stops the start
                refused = exc.with_traceback(None)
                break
        if not errors:
            return refused
        error = mismatch_error(errors, raised_instead)
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error

    def _raises(self, verdict: Verdict) -> bool:
        return self.settings.mode == "error" and (
            self.settings.strict or verdict.severity == "error"
        )

    def _warned_before(self, hit: Hit, target: str, site: Any) -> bool:
        obj, verdict = hit
        return self._was_warned((_identity(obj, verdict), verdict.kind, target), site)

    def _was_warned(self, handoff: Tuple[Any, ...], site: Any) -> bool:
        """Warned about per object, kind, target start method and start site. A start
        with no user frame (a pool's thread replacing a worker) repeats the start that
        was warned about where the user made the pool."""
        return (*handoff, site) in self._warned or (site is None and handoff in self._warned)

    def _first_time(self, finding: Finding) -> bool:
        """Whether this hand-off was not warned about yet (and note it)."""
        site = finding.started_at[-1] if finding.started_at else None
        handoff = (finding.identity, finding.kind, finding.target)
        if self._was_warned(handoff, site):
            return False
        if len(self._warned) < 10_000:
            self._warned[(*handoff, site)] = None
            self._warned[handoff] = None
        return True


def _identity(obj: Any, verdict: Verdict) -> Any:
    """What a finding is about: the record of the object's creation, else the object."""
    origin = verdict.origin
    return (origin[origins.PID], origin[origins.SERIAL]) if origin else id(obj)


# Per thread, the ``DumpScan`` of the start being pickled: its SemLocks are judged
# by the scanning pickler, not again by ``Checker.semlock_getstate``.
_dumping: Dict[int, Any] = {}


_is_process = forkwalk.is_process


def _every_offender(
    proc: Any, target: str, package: str, functions_by_value: bool = True
) -> List[Hit]:
    """Every tracked object of ``package`` in what ``proc`` sends, judged: for a start whose
    pickling cannot show them all (a library's own, or one that fails at the first).
    A process class that pickles itself (its own ``__getstate__``) sends what only its
    code knows: nothing of it is guessed."""
    reduction = [sys.modules[f"{package}.reduction"]]
    hits: List[Hit] = []
    cls = type(proc)
    if _reduces_itself(cls, walk.registered_reducer(cls, reduction)):
        return hits
    table = forkwalk.PICKLED if functions_by_value else forkwalk.PICKLED_BY_NAME
    found = forkwalk.tracked(walk.child_objects(proc), 10_000, 1000, table)
    for obj in found:
        if flavours.package_of_class(type(obj)) != package:
            continue  # that package's own spawning state decides
        if _reduces_itself(type(obj), walk.registered_reducer(type(obj), reduction)):
            continue  # what it sends is known only by pickling it
        verdict = judge(obj, target)
        if verdict is not None and _reportable(verdict, target):
            hits.append((obj, verdict))
    return hits


def _functions_by_name(package: str) -> bool:
    """Whether ``package``'s ForkingPickler sends functions as pickle does, by name (not
    dill's, whose Python pickler sends a ``__main__`` function with its closure)."""
    pickler = sys.modules[f"{package}.reduction"].ForkingPickler
    if not issubclass(pickler, pickle.Pickler):  # the Python pickler: dill's base
        return False
    registered = getattr(pickler, "_extra_reducers", {})
    if types.FunctionType in registered or types.FunctionType in copyreg.dispatch_table:
        return False
    return typeinfo.lookup(pickler, "reducer_override") is None


def _reportable(verdict: Optional[Verdict], target: str) -> bool:
    """For a library's own start method ("loky") only what cannot work is reported: its
    contexts are not multiprocessing's, so mixing with them means nothing."""
    return verdict is not None and (target in origins.STANDARD_METHODS or verdict.kind == MISMATCH)


def _start_frames() -> Iterator[Tuple[int, Any]]:
    """(depth, frame) of each ``BaseProcess.start`` running in this thread, innermost
    first; depth counts from the caller."""
    starts = {cls.start.__code__ for cls in flavours.classes("process", "BaseProcess")}
    frame, depth = sys._getframe(2), 1
    while frame is not None:
        if frame.f_code in starts:
            yield depth, frame
        frame, depth = frame.f_back, depth + 1


def _starting_process() -> Any:
    """The process whose ``start()`` is running in this thread, found on the stack: a
    library's Popen need not keep it anywhere else."""
    for _, frame in _start_frames():
        proc = frame.f_locals.get("self")
        return proc if _is_process(proc) else None
    return None


def _start_call_depth() -> int:
    """How far up the caller's caller calls ``start()``, counted as :func:`stacks.capture`
    counts (1 when there is no such frame: the user's frame is then found by module).
    What runs below ``start()`` (a library's Popen, its pickler) is not where the user
    started the process."""
    for depth, _ in _start_frames():
        return depth
    return 1
