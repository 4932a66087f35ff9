"""Run code right after a module is imported, without importing it ourselves.

Patching a multiprocessing module means importing it, and ``sharedctypes`` brings
ctypes: a program that never makes a ``Value`` would run with modules it never
imported. :func:`when_imported` patches a module now if the program has imported
it, or just after the program imports it, before the import statement returns.
Loaded at interpreter start by activated processes: it imports nothing.
"""

import sys
from _thread import RLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Dict, List, Optional

    Callback = Callable[[ModuleType], None]

_lock = RLock()  # innermost: nothing is called while it is held
_waiting: "Dict[str, List[Callback]]" = {}
_finder: "Optional[_Finder]" = None


def when_imported(name: str, callback: "Callback") -> None:
    """Call ``callback(module)`` once, when module ``name`` has been executed: now if it
    is imported, else right after its import. Registered before ``sys.modules`` is
    read, so an import racing in another thread is not missed; one that is under way
    there is waited for. Do not call it holding a lock the callback takes."""
    global _finder
    with _lock:
        _waiting.setdefault(name, []).append(callback)
        if _finder is None:
            _finder = _Finder()
            sys.meta_path.insert(0, _finder)
    if name in sys.modules:
        __import__(name)  # returns at once, or when another thread has finished it
        _run(name, callback, sys.modules[name])


def forget(callback: "Callback") -> None:
    """Drop ``callback`` wherever it still waits."""
    with _lock:
        for name, callbacks in list(_waiting.items()):
            while callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                del _waiting[name]
        _drop_finder_if_idle()


def _run(name: str, callback: "Callback", module: "ModuleType") -> None:
    with _lock:
        callbacks = _waiting.get(name, [])
        if callback not in callbacks:
            return  # run already (a racing import), or forgotten
        callbacks.remove(callback)
        if not callbacks:
            del _waiting[name]
        _drop_finder_if_idle()
    callback(module)


def _imported(name: str, module: "ModuleType") -> None:
    with _lock:
        callbacks = list(_waiting.get(name, ()))
    for callback in callbacks:
        try:
            _run(name, callback, module)
        except Exception as exc:  # our fault: the user's import goes on
            sys.stderr.write(
                f"mpsanitizer: could not instrument {name} ({type(exc).__name__}: {exc}); "
                "running without it\n"
            )


def _drop_finder_if_idle() -> None:
    global _finder
    if not _waiting and _finder is not None:
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None


class _Loader:
    """Delegates to the real loader, then runs the module's callbacks."""

    def __init__(self, loader: "Any", name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: "Any") -> "Any":
        return self._loader.create_module(spec)

    def exec_module(self, module: "ModuleType") -> None:
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _imported(self._name, module)

    def __getattr__(self, name: str) -> "Any":
        return getattr(self._loader, name)


class _Finder:
    """First on ``sys.meta_path``: asks the finders after it for a waited-for module's
    spec and puts :class:`_Loader` around its loader."""

    def find_spec(self, name: str, path: "Any" = None, target: "Any" = None) -> "Any":
        if name not in _waiting or name in sys.modules:
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(name, path, target)
            if spec is not None:
                loader = spec.loader
                if loader is not None and hasattr(loader, "exec_module"):
                    spec.loader = _Loader(loader, name)
                return spec
        return None
