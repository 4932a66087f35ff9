"""``python -m mpsanitizer [options] (script.py | dir | app.pyz | - | -m module | -c code)
[args...]``: the command line, activation for the whole process tree, the exit status.

The program itself is prepared and run by :mod:`mpsanitizer.program`, so that it sees
what ``python script.py`` gives it.
"""

from __future__ import annotations

import atexit
import os
import sys

from . import options, relaunch
from .config import Settings
from .usage import UsageError, say

TYPE_CHECKING = False
if TYPE_CHECKING:  # the program may have a typing.py of its own: python would not import ours
    from typing import Any, Dict, List, Optional, Set, Tuple

USAGE = (
    "usage: python -m mpsanitizer [--mode error|warn] [--strict] [--stack-depth N]\n"
    "                             [--log-path PATH] [--fail-on-warning] [--in-process]\n"
    "                             (script.py | dir | app.pyz | - | -m module | -c code) [args...]"
)
EXIT_USAGE = 2
EXIT_WARNINGS = 3


SWITCHES = ("--fail-on-warning", "--in-process")  # the runner's own, not the sanitizer's


def parse(argv: List[str]) -> Tuple[Dict[str, object], Set[str], str, str, List[str]]:
    """Options end at the script name (or ``-m module``, ``-c code``). Returns the
    sanitizer's settings, the runner's switches given, and what to run."""
    values: Dict[str, object] = {}
    switches: Set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            say(USAGE, "stdout")
            raise SystemExit(0)
        if arg in ("-m", "-c"):
            if i + 1 >= len(argv):
                raise UsageError(f"argument {arg} needs a value")
            return values, switches, arg, argv[i + 1], argv[i + 2 :]
        if arg[:2] in ("-m", "-c"):  # -mjson.tool, -c'print(1)': joined, as python takes them
            return values, switches, arg[:2], arg[2:], argv[i + 1 :]
        if arg == "--":  # as python: what follows is the script, whatever it looks like
            if i + 1 >= len(argv):
                raise UsageError("no script after --")
            return values, switches, "script", argv[i + 1], argv[i + 2 :]
        if arg == "--strict":
            values["strict"] = True
        elif arg.startswith("--strict="):
            values["strict"] = options.convert("strict", arg.partition("=")[2], "--strict")
        elif arg in SWITCHES:
            switches.add(arg)
        elif arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if key not in ("mode", "stack_depth", "log_path"):
                if sep and arg.split("=")[0] in SWITCHES:
                    raise UsageError(f"option {arg.split('=')[0]} takes no value")
                raise UsageError(f"unknown option {arg.split('=')[0]}")
            if not sep:
                if i + 1 >= len(argv):
                    raise UsageError(f"option --{key.replace('_', '-')} needs a value")
                i += 1
                value = argv[i]
            values[key] = options.convert(key, value, f"--{key.replace('_', '-')}")
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        else:
            return values, switches, "script", arg, argv[i + 1 :]
        i += 1
    raise UsageError("no script, -m module or -c code to run")


def main(argv: Optional[List[str]] = None, path0: Optional[str] = None) -> int:
    """Run the program: as ``python`` itself (:mod:`mpsanitizer.relaunch`) where it can,
    else in this interpreter; ``argv``: ours, from ``sys.argv`` when None (only then does it
    replace the process). ``path0``: the entry ``python -m`` put first on ``sys.path``,
    which ``__main__`` took off while we import, put back before the program runs here."""
    try:
        cli, switches, kind, target, args = parse(list(sys.argv[1:] if argv is None else argv))
        fail_on_warning = "--fail-on-warning" in switches
        settings = options.settings_from(  # command line > MPSANITIZE > MPSANITIZE_OPTIONS
            options.parse_pairs(os.environ.get(options.OPTIONS, "")),
            options.toggle_value(os.environ) or {},  # off: running the runner says on
            cli,
        )
    except (UsageError, ValueError) as exc:
        return _usage_error(exc)
    if argv is None and not switches and _runnable(kind, target, path0) and relaunch.possible():
        program = [target, *args] if kind == "script" else [kind, target, *args]
        given = sys.argv[1:]
        if kind == "script" and given[-len(program) - 1 : -len(program)] == ["--"]:
            program.insert(0, "--")  # as it was given: sys.orig_argv shows it
        relaunch.become(program, options.to_environment(settings))
    from .program import NotCompiled, prepare, report, rerun_natively, run

    if path0 is not None:
        sys.path.insert(0, path0)
    try:
        code, module = prepare(kind, target, args)
    except (UsageError, ValueError) as exc:
        return _usage_error(exc)
    except NotCompiled as failure:
        if argv is None and failure.rerun is not None:
            os.environ.update(options.to_environment(settings))
            rerun_natively(failure.rerun)
        report(failure.error)
        return 1
    except SystemExit:
        raise
    except BaseException as exc:  # the program's own code failed: a -m parent package
        report(exc)
        return 1
    from . import lazy

    finish = _Finish(fail_on_warning)
    if fail_on_warning:
        settings = finish.read_logs(settings)
    os.environ.update(options.to_environment(settings))
    lazy.arm(settings)
    atexit.register(finish)  # first registered: runs last
    try:
        finish.status = run(code, module)
    except SystemExit as exc:
        finish.status = exc.code  # type: ignore[assignment]
        if sys.flags.inspect:  # python -i shows it, then gives the prompt
            report(exc)
    return finish.status  # type: ignore[return-value]


def _usage_error(exc: Exception) -> int:
    message = str(exc)
    if not message.startswith("mpsanitizer:"):
        message = f"mpsanitizer: error: {message}"
    say(message)
    return EXIT_USAGE


def _runnable(kind: str, target: str, path0: Optional[str] = None) -> bool:
    """Whether python would find what to run, as far as can be told without running any
    of the program's code (a package's ``__init__``): else the in-process runner says why,
    in our one line and status 2."""
    if kind == "script":
        if os.path.isdir(target):
            return os.path.isfile(os.path.join(target, "__main__.py"))
        return target == "-" or os.path.exists(target)
    if kind != "-m":
        return True
    import importlib.util  # this process becomes another: what it imports is not kept

    parents = target.split(".")[:-1]
    imported = all(".".join(parents[: i + 1]) in sys.modules for i in range(len(parents)))
    if path0 is not None:
        sys.path.insert(0, path0)  # where python -m looks first
    try:  # with a parent not imported yet, only the top level can be looked up
        return importlib.util.find_spec(target if imported else target.split(".")[0]) is not None
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    finally:
        if path0 is not None:
            sys.path.remove(path0)


class _Finish:
    """The end of the run, once the program's threads and atexit handlers are done (a
    process they start is checked too): the summary line, ``--fail-on-warning``, SIGINT."""

    def __init__(self, fail_on_warning: bool) -> None:
        self.fail_on_warning = fail_on_warning
        self.status: object = None
        self.reader: Optional[Any] = None
        self.own_dir: Optional[str] = None
        self.pid = os.getpid()  # a child of a bare os.fork() runs atexit too: not its business

    def read_logs(self, settings: Settings) -> Settings:
        """Have every process of the tree log its findings where this one reads them: the
        user's log prefix, or a directory of our own (removed at the end)."""
        from . import jsonlog

        if not settings.log_path:
            import tempfile

            self.own_dir = tempfile.mkdtemp(prefix="mpsanitizer-")
            path = os.path.join(self.own_dir, "findings")
            settings = Settings(settings.mode, settings.strict, settings.stack_depth, path)
        self.reader = jsonlog.Reader(settings.log_path or "")
        self.reader.mark()  # what earlier runs left under the user's prefix is not ours
        return settings

    def __call__(self) -> None:
        from .program import exit_by_sigint_if_interrupted, exit_now

        try:
            found = self._summary()
        except Exception as exc:  # our fault: one line, and the exit status is the program's
            say(f"mpsanitizer: internal error while summing up ({type(exc).__name__}: {exc})")
            found = False
        if found and self.fail_on_warning and self.status in (0, None):
            exit_now(EXIT_WARNINGS)
        exit_by_sigint_if_interrupted()

    def _summary(self) -> bool:
        """Say what was found, here and in the child processes; True if anything was."""
        from .lazy import own_findings_line

        own = own_findings_line()
        children = self._children_findings()
        if own is not None:
            say(own)
        if children:
            from .findings import summarize

            say(f"mpsanitizer: findings in its child processes: {summarize(children)}")
        return bool(own is not None or children)

    def _children_findings(self) -> List[Any]:
        if self.reader is None or os.getpid() != self.pid:
            return []
        try:
            records = self.reader.new_records()
        except (OSError, ValueError) as exc:
            say(f"mpsanitizer: could not read the child processes' findings ({exc})")
            records = []
        if self.own_dir:
            import shutil

            shutil.rmtree(self.own_dir, ignore_errors=True)
        if not records:
            return []
        from .findings import Finding

        return [Finding.from_dict(r) for r in records if r.get("pid") != os.getpid()]
