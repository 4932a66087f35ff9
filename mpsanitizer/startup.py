"""Activation from the environment, run by the ``mpsanitizer.pth`` line at
interpreter start when ``MPSANITIZE`` is set. Never raises."""

import os
import sys


def _is_helper_process() -> bool:
    """The resource tracker needs no sanitizer."""
    argv = getattr(sys, "orig_argv", None) or []
    return any("multiprocessing.resource_tracker" in arg for arg in argv)


def activate() -> None:
    from . import options

    try:
        settings = options.from_environment(os.environ)
    except ValueError as exc:
        message = str(exc)
        sys.stderr.write(
            message if message.startswith("mpsanitizer:") else f"mpsanitizer: {message}"
        )
        sys.stderr.write("\n")
        sys.stderr.flush()
        os._exit(2)
    if settings is None or _is_helper_process():
        return
    try:
        from . import lazy

        lazy.arm(settings)
    except Exception as exc:
        sys.stderr.write(
            f"mpsanitizer: could not activate ({type(exc).__name__}: {exc}); running without it\n"
        )
