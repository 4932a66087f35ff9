"""``python -m mpsanitizer``: run a program with the sanitizer on."""

import sys

from mpsanitizer.runner import main

if __name__ == "__main__":
    status = main()
    if not sys.flags.inspect:  # python -i: the prompt follows, as after `python -i app.py`
        raise SystemExit(status)
