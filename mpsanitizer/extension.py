"""The optional C extension (``mpsanitizer/_native.c``), or None.

``hatch_build.py`` compiles it where there is a C compiler; without it, or with
``MPSANITIZE_PURE_PYTHON`` set (tests, comparisons), the same work is done in Python.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Optional

PURE_PYTHON = "MPSANITIZE_PURE_PYTHON"
_module: Any = None  # False: looked for, not there


def get() -> Optional[Any]:
    """The extension module, imported at the first call."""
    global _module
    if _module is None:
        _module = False
        if not os.environ.get(PURE_PYTHON):
            try:
                from . import _native  # type: ignore[attr-defined]

                _module = _native
            except Exception:  # not built, or not for this interpreter
                pass
    return _module or None
