"""pytest plugin: idle unless asked by ``--mpsanitize[=MODE]``, ``MPSANITIZE`` or ini.

When active, every process of the test session (pytest itself, fork children,
spawn and forkserver children through the environment) logs its findings as
JSON lines under one session prefix. After each test the plugin reads what was
logged during it: an error-class finding fails the test with the report, even
when user code swallowed the exception, a background thread raised it, an
executor turned it into ``BrokenProcessPool`` or it happened in a child.
Warnings from other processes are re-emitted here, into pytest's summary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict, Generator, List, Optional, Tuple

import pytest

from . import jsonlog, options
from .config import Settings

MARKER = "no_mpsanitize"
FIXTURE = "mpsanitizer_findings"
_SESSION_LOG = "MPSANITIZE_PYTEST_LOG"


class _Session:
    """The plugin's state for one pytest run (kept in ``config.stash``)."""

    def __init__(self, settings: Settings, source: str, own_dir: Optional[str]) -> None:
        self.settings = settings
        self.source = source
        self.own_dir = own_dir
        self._reader = jsonlog.Reader(settings.log_path or "")

    def mark(self) -> None:
        """Remember how far every log file has been read."""
        self._reader.mark()

    def new_records(self) -> List[Dict[str, Any]]:
        return self._reader.new_records()


_KEY = pytest.StashKey[Optional[_Session]]()
# What the session changed in this process, put back at its end (``pytest.main()`` and
# pytester run sessions inside a process that goes on): (environment, settings before).
_BEFORE = pytest.StashKey[Tuple[Dict[str, Optional[str]], Optional[Settings]]]()
_ENVIRONMENT = (options.TOGGLE, options.OPTIONS, _SESSION_LOG)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mpsanitizer", "multiprocessing start-method sanitizer")
    group.addoption(
        "--mpsanitize",
        nargs="?",
        const="error",
        default=None,
        metavar="MODE",
        help="turn mpsanitizer on: error (default), warn or strict; off to force it off",
    )
    parser.addini("mpsanitize", "turn mpsanitizer on: error, warn or strict", default="")
    parser.addini("mpsanitize_options", "key=value pairs as in MPSANITIZE_OPTIONS", default="")


def _resolve(config: pytest.Config) -> Tuple[Optional[Settings], str]:
    """Command line > environment > ini."""
    cli = config.known_args_namespace.mpsanitize
    env = os.environ.get(options.TOGGLE, "").strip()
    ini = str(config.getini("mpsanitize") or "").strip()
    for value, source in (
        (cli, "--mpsanitize"),
        (env or None, options.TOGGLE),
        (ini or None, "ini"),
    ):
        if value is None:
            continue
        label = "ini option mpsanitize" if source == "ini" else source
        toggle = options.toggle_value({options.TOGGLE: value}, label)
        if toggle is None:
            return None, source
        layers = [
            options.parse_pairs(str(config.getini("mpsanitize_options") or ""), "ini"),
            options.parse_pairs(os.environ.get(options.OPTIONS, "")),
            toggle,
        ]
        return options.settings_from(*layers), source
    return None, ""


def _give_back_a_swallowed_argument(config: pytest.Config, args: List[str]) -> None:
    """``pytest --mpsanitize tests/``: the optional value took the test path. Not a mode,
    so it is given back to pytest, which parses ``args`` again for the session."""
    value = config.known_args_namespace.mpsanitize
    if value is None or value.strip().lower() in options.ON or value.strip().lower() in options.OFF:
        return
    for i in range(len(args) - 1):
        if args[i] == "--mpsanitize" and args[i + 1] == value:
            args[i] = "--mpsanitize=error"
            config.known_args_namespace.mpsanitize = "error"
            return


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: List[str]) -> None:
    _give_back_a_swallowed_argument(early_config, args)
    try:
        settings, source = _resolve(early_config)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    session: Optional[_Session] = None
    if settings is not None or source:
        import mpsanitizer

        environment = {key: os.environ.get(key) for key in _ENVIRONMENT}
        early_config.stash[_BEFORE] = (environment, mpsanitizer.settings())
    if settings is not None:
        own_dir = None
        # A log prefix inherited from a controlling pytest (an xdist worker) is not
        # ours to read: each pytest process reads only its own processes' findings.
        if not settings.log_path or settings.log_path == os.environ.get(_SESSION_LOG):
            own_dir = tempfile.mkdtemp(prefix="mpsanitizer-")
            settings = Settings(
                settings.mode, settings.strict, settings.stack_depth,
                os.path.join(own_dir, "findings"),
            )  # fmt: skip
        session = _Session(settings, source, own_dir)
        os.environ.update(options.to_environment(settings))
        if own_dir:
            os.environ[_SESSION_LOG] = settings.log_path or ""
        from . import patches, stacks

        stacks.stop_at_packages("_pytest", "pluggy")  # a test's stacks end at the test
        patches.enable(settings)
    elif source:
        os.environ[options.TOGGLE] = "0"  # forced off: keep children off too
        from . import patches

        patches.disable()  # and this process, which MPSANITIZE may have armed at startup
    early_config.stash[_KEY] = session


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: run this test without mpsanitizer (and its children too)"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_KEY, None)
    if session is not None and session.own_dir:
        shutil.rmtree(session.own_dir, ignore_errors=True)
    before = config.stash.get(_BEFORE, None)
    if before is None:
        return
    environment, settings = before
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from . import patches

    if settings is None:
        patches.disable()
    else:
        patches.enable(settings)


def pytest_report_header(config: pytest.Config) -> str:
    session = config.stash.get(_KEY, None)
    if session is None:
        return "mpsanitizer: off"
    s = session.settings
    return (
        f"mpsanitizer: mode={s.mode} strict={s.strict} stack_depth={s.stack_depth} "
        f"(from {session.source})"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    session = item.config.stash.get(_KEY, None)
    if session is not None:
        session.mark()  # what earlier tests left unread is not this test's
    if session is None or item.get_closest_marker(MARKER) is None:
        yield
        return
    from . import patches

    saved = {k: os.environ.get(k) for k in (options.TOGGLE, options.OPTIONS)}
    patches.disable()
    os.environ[options.TOGGLE] = "0"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        patches.enable(session.settings)


class FindingsRecorder:
    """What the ``mpsanitizer_findings`` fixture gives a test: its findings so far."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._findings: List[Any] = []

    @property
    def findings(self) -> List[Any]:
        from .findings import Finding

        self._findings.extend(Finding.from_dict(r) for r in self._session.new_records())
        return list(self._findings)

    def kinds(self) -> List[str]:
        return [f.kind for f in self.findings]


@pytest.fixture
def mpsanitizer_findings(request: pytest.FixtureRequest) -> FindingsRecorder:
    """Findings of this test, for asserting that one happens; they do not fail it."""
    session = request.config.stash.get(_KEY, None)
    if session is None:
        pytest.skip("mpsanitizer is not active (use --mpsanitize)")
    return FindingsRecorder(session)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator:
    outcome = yield
    report = outcome.get_result()
    _headline_only(report, call)
    session = item.config.stash.get(_KEY, None)
    if session is None or FIXTURE in getattr(item, "fixturenames", ()):
        return
    if call.when == "setup" and report.outcome != "failed":
        return  # findings of a passing setup fail the test itself, with its call
    try:
        records = session.new_records()
    except Exception as exc:
        warnings.warn(f"mpsanitizer: could not read findings ({exc})", RuntimeWarning, stacklevel=1)
        return
    raised = _reemit_child_warnings(records, item.config.pluginmanager.has_plugin("warnings"))
    errors = _reports(records) + raised
    if not errors:
        return
    if report.outcome == "failed":  # already failing, often from this very finding: once
        shown = str(report.longrepr)
        text = "\n\n".join(e for e in errors if _summary_line(e) not in shown)
        if text:
            report.sections.append(("mpsanitizer findings", text))
        return
    report.outcome = "failed"
    report.longrepr = FindingsFailure(errors)  # type: ignore[assignment]
    if hasattr(report, "wasxfail"):  # a finding is not the failure it expects (junitxml)
        del report.wasxfail


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator:
    """A finding while a module is imported (a test module's top level starting a child)
    makes its collection an error, as an exception there would."""
    outcome = yield
    session = collector.config.stash.get(_KEY, None)
    if session is None:
        return
    report = outcome.get_result()
    try:
        records = session.new_records()
    except Exception as exc:
        warnings.warn(f"mpsanitizer: could not read findings ({exc})", RuntimeWarning, stacklevel=1)
        return
    errors = _reports(records)
    if errors and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = FindingsFailure(errors, "while collecting")  # type: ignore[assignment]


class FindingsFailure:
    """Why a test that raised nothing fails: the reports of its findings, under a
    headline that pytest's short summary shows alone, on CI too (for a plain string it
    shows nothing before pytest 9, and every line of it on CI)."""

    def __init__(self, reports: List[str], when: str = "during this test") -> None:
        first = _summary_line(reports[0]).replace("SUMMARY: mpsanitizer: ", "")
        headline = f"mpsanitizer: {len(reports)} finding(s) {when}"
        if first != reports[0]:
            headline += f": {first}"
        self.reprcrash = _Crash(headline)
        self.text = headline + "\n\n" + "\n\n".join(reports)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:  # what pytest-xdist and junitxml carry
        return self.text


class _Crash:
    """The ``reprcrash`` pytest's short summary and junitxml read: the headline."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path, self.lineno = "", 0


def _headline_only(report: pytest.TestReport, call: pytest.CallInfo) -> None:
    """Keep a raised finding's short-summary line to its headline.

    pytest prints the whole crash message there when it runs on CI (``CI`` or
    ``BUILD_NUMBER`` set), which would show the report twice; elsewhere it shows
    the first line only, which is what this makes it show everywhere.
    """
    from .errors import ContextMismatchError, ContextMixingWarning

    if call.excinfo is None or not isinstance(
        call.excinfo.value, (ContextMismatchError, ContextMixingWarning)
    ):
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and "\n" in message:
        with contextlib.suppress(Exception):  # a pytest whose crash record is frozen
            crash.message = message.splitlines()[0]


def _reports(records: List[Dict[str, Any]]) -> List[str]:
    """The report of each error-class finding among ``records``."""
    from .findings import Finding
    from .report import format_report

    errors = [r for r in records if r.get("severity") == "error"]
    return [format_report([Finding.from_dict(r)]) + _where(r) for r in errors]


def _summary_line(text: str) -> str:
    """The ``SUMMARY: mpsanitizer: ...`` line of a report."""
    return next((line for line in text.splitlines() if line.startswith("SUMMARY: ")), text)


def _where(record: Dict[str, Any]) -> str:
    return f"\n  (reported by pid {record.get('pid')}, {record.get('reporting_process', '')})"


def _reemit_child_warnings(records: List[Dict[str, Any]], summarized: bool) -> List[str]:
    """Warn here about each warning of another process, for pytest's warnings summary
    (``summarized``: its warnings plugin is on; else the child's own stderr, captured with
    the test, is all that shows, and nothing is printed here, outside any capture); the
    texts of those the warning filters turn into errors (``-W error``), which fail the test."""
    from .errors import warn
    from .findings import Finding

    raised = []
    for record in records:
        if record.get("severity") == "warning" and record.get("pid") != os.getpid():
            try:
                with (
                    contextlib.nullcontext() if summarized else warnings.catch_warnings(record=True)
                ):
                    warn(Finding.from_dict(record), "<child process>")
            except Warning as exc:
                raised.append(f"{type(exc).__name__}: {exc}{_where(record)}")
    return raised
