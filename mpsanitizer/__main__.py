"""``python -m mpsanitizer``: run a program with the sanitizer on."""

from mpsanitizer.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
