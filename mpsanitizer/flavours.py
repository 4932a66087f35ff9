"""The packages that are multiprocessing: the standard library's, and its copies with the
same modules and classes, ``multiprocess`` (dill's, pathos's) and ``billiard`` (celery's).

Each copy has its own contexts, primitives, Process classes and spawning state, so an
object is judged by its own package, as that package's own checks would judge it.
"""

import sys

from . import typeinfo

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Dict, List, Optional, Tuple

STANDARD = "multiprocessing"
PACKAGES = (STANDARD, "multiprocess", "billiard")


def package_of(module_name: "Optional[str]") -> "Optional[str]":
    """The package ``module_name`` belongs to, if it is one of them."""
    head = (module_name or "").partition(".")[0]
    return head if head in PACKAGES else None


_class_packages: "Dict[type, str]" = {}


def package_of_class(cls: type) -> str:
    """The package whose class ``cls`` is or derives from (a user subclass of
    ``multiprocess.Process`` is multiprocess's)."""
    try:
        return _class_packages[cls]
    except KeyError:
        pass
    modules = map(typeinfo.module_of, typeinfo.mro(cls))
    found = next(filter(None, map(package_of, modules)), STANDARD)
    if len(_class_packages) < 10_000:
        _class_packages[cls] = found
    return found


def per_package(of_module: "Dict[str, Any]") -> "Dict[str, Any]":
    """``{"synchronize": x}`` -> ``{"multiprocessing.synchronize": x, "multiprocess...": x,
    ...}``: a table of multiprocessing's modules, for every package."""
    return {f"{p}.{module}": value for p in PACKAGES for module, value in of_module.items()}


_full_names: "Dict[str, Tuple[str, ...]]" = {}
_classes: "Dict[Tuple[str, str], Tuple[Tuple[Any, ...], Tuple[type, ...]]]" = {}


def modules(name: str) -> "List[Any]":
    """The imported ``<package>.<name>`` modules, the standard library's first."""
    return [module for module in _imported(name) if module is not None]


def _imported(name: str) -> "Tuple[Any, ...]":
    names = _full_names.get(name)
    if names is None:
        names = _full_names[name] = tuple(f"{package}.{name}" for package in PACKAGES)
    return tuple(map(sys.modules.get, names))


def classes(module: str, name: str) -> "Tuple[type, ...]":
    """Class ``name`` of every imported ``<package>.<module>``: ``classes("process",
    "BaseProcess")``. Judging each tracked object asks: kept until another package's
    module is imported."""
    imported = _imported(module)
    cached = _classes.get((module, name))
    if cached is not None and cached[0] == imported:
        return cached[1]
    found = (getattr(m, name, None) for m in imported if m is not None)
    result = tuple(cls for cls in found if isinstance(cls, type))
    if not any(m is not None and initializing(m) for m in imported):
        _classes[(module, name)] = (imported, result)
    return result


def initializing(module: "Any") -> bool:
    """Whether ``module`` is still being imported (its classes may not exist yet)."""
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def spawning_popen(package: str) -> "Any":
    """The Popen that is pickling a process in this thread, in ``package``'s own state."""
    context = sys.modules.get(f"{package}.context")
    return context.get_spawning_popen() if context is not None else None
