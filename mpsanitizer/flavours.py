"""The packages that are multiprocessing: the standard library's, and its copies with the
same modules and classes, ``multiprocess`` (dill's, pathos's) and ``billiard`` (celery's).

Each copy has its own contexts, primitives, Process classes and spawning state, so an
object is judged by its own package, as that package's own checks would judge it.
"""

import sys

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
    found = next(filter(None, (package_of(k.__module__) for k in cls.__mro__)), STANDARD)
    if len(_class_packages) < 10_000:
        _class_packages[cls] = found
    return found


def modules(name: str) -> "List[Any]":
    """The imported ``<package>.<name>`` modules, the standard library's first."""
    found = (sys.modules.get(f"{package}.{name}") for package in PACKAGES)
    return [module for module in found if module is not None]


def classes(module: str, name: str) -> "Tuple[type, ...]":
    """Class ``name`` of every imported ``<package>.<module>``: ``classes("process",
    "BaseProcess")``."""
    found = (getattr(m, name, None) for m in modules(module))
    return tuple(cls for cls in found if isinstance(cls, type))


def spawning_popen(package: str) -> "Any":
    """The Popen that is pickling a process in this thread, in ``package``'s own state."""
    context = sys.modules.get(f"{package}.context")
    return context.get_spawning_popen() if context is not None else None
