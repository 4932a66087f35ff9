"""Standard modules that wrapt imports but uses only when called, imported when first used.

wrapt 2's ``wrapt.synchronization`` imports asyncio at its top, and asyncio imports
concurrent.futures, logging, socket and ssl: 50 ms of a process's first start (70 ms in
all for ``import wrapt``), and modules the program never imported. logging's import also
registers fork handlers, and one registered while another thread forks prints "cannot
release un-acquired lock" in the parent. wrapt reads ``asyncio.run`` and the like only
inside its async helpers, so while wrapt loads, ``sys.modules['asyncio']`` is a stand-in
that imports the real module at its first attribute read; it leaves ``sys.modules`` once
wrapt is loaded, so the program's own ``import asyncio`` is CPython's.
"""

from __future__ import annotations

import importlib
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List

NAMES = ("asyncio",)


class _ImportedOnUse(types.ModuleType):
    """A module's stand-in: its first attribute read imports the module itself."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # a probe (__path__, __file__)
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:  # read while wrapt still loads
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


class Deferred:
    """``with Deferred(): import wrapt``: the :data:`NAMES` not imported yet are stand-ins
    for its duration."""

    def __enter__(self) -> Deferred:
        self.placed: List[Any] = []
        for name in NAMES:
            if name not in sys.modules:
                stand_in = _ImportedOnUse(name)
                sys.modules[name] = stand_in
                self.placed.append(stand_in)
        return self

    def __exit__(self, *exc: object) -> None:
        for stand_in in self.placed:
            if sys.modules.get(stand_in.__name__) is stand_in:
                del sys.modules[stand_in.__name__]
