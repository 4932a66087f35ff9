"""Our first-start imports, not shadowed by the program's own modules.

wrapt and the checking modules load at a process's first start, when the directories the
program put before the standard library (its script's directory, ``PYTHONPATH``) are on
``sys.path``: a ``random.py`` or ``email.py`` beside the script would be imported in place
of the standard library's (wrapt alone imports about eighty modules), running the
program's code at a moment of ours and breaking the check. While they load, an import of
this thread whose name one of those directories holds is looked up past them; afterwards
those modules leave ``sys.modules`` again (wrapt aside: ours), so that the program's own
``import random`` still finds its own module, as without mpsanitizer.
"""

from __future__ import annotations

import os
import sys
from _thread import get_ident
from importlib.machinery import PathFinder

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is one of the modules this guards
    from typing import Any, List, Optional


def _before_the_standard_library() -> List[str]:
    """The ``sys.path`` entries ahead of the standard library's directory."""
    stdlib = os.path.dirname(os.__file__)
    entries: List[str] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        if os.path.abspath(entry or ".") == stdlib:
            return entries
        if not entry.endswith(".zip"):  # the standard library's own zip entry
            entries.append(entry)
    return []  # no standard library directory on the path: leave the search alone


class _PastTheProgram:
    """A ``sys.meta_path`` finder for one thread: top-level names that the program's
    directories hold are looked up in the rest of ``sys.path``."""

    def __init__(self, shadowing: List[str]) -> None:
        self.shadowing = shadowing
        self.thread = get_ident()
        self.redirected: List[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if path is not None or get_ident() != self.thread:
            return None
        try:
            if PathFinder.find_spec(name, self.shadowing) is None:
                return None
            rest = [p for p in sys.path if p not in self.shadowing]
            spec = PathFinder.find_spec(name, rest)
        except Exception:  # the usual search decides
            return None
        if spec is not None:
            self.redirected.append(name)
        return spec


class OwnImports:
    """``with OwnImports(): import wrapt``: see the module's docstring."""

    def __enter__(self) -> None:
        self._finder: Optional[_PastTheProgram] = None
        try:
            shadowing = _before_the_standard_library()
            if shadowing:
                self._finder = _PastTheProgram(shadowing)
                sys.meta_path.insert(0, self._finder)
        except Exception:  # an odd sys.path: import as the program would
            self._finder = None

    def __exit__(self, *exc_info: Any) -> None:
        finder = self._finder
        if finder is None:
            return
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name in finder.redirected:  # the program's `import random` gets its own again
            if name == "wrapt":  # ours, imported again by name where it is used
                continue
            for loaded in [m for m in list(sys.modules) if m == name or m.startswith(name + ".")]:
                sys.modules.pop(loaded, None)
