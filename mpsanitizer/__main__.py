"""``python -m mpsanitizer``: run a program with the sanitizer on."""

import sys

# ``python -m`` put the current directory first on sys.path; ``python app.py`` would not
# see it, so its modules (a contextlib.py) must not shadow the ones we import: off the path
# until the program runs (runner.main puts it back for the in-process runner to replace).
_CWD_FIRST = not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)) and bool(sys.path)
_cwd = sys.path.pop(0) if _CWD_FIRST else None

from mpsanitizer.runner import main  # noqa: E402

if __name__ == "__main__":
    status = main(path0=_cwd)
    if not sys.flags.inspect:  # python -i: the prompt follows, as after `python -i app.py`
        raise SystemExit(status)
