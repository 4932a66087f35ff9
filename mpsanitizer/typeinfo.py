"""A class's own attributes, read through ``type``'s descriptors: a metaclass's
``__getattribute__`` or properties (a mock's, a proxy library's) never run."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Mapping, Tuple

_OF_TYPE = type.__dict__
_mro = _OF_TYPE["__mro__"].__get__
_namespace = _OF_TYPE["__dict__"].__get__
_module = _OF_TYPE["__module__"].__get__
_qualname = _OF_TYPE["__qualname__"].__get__
_name = _OF_TYPE["__name__"].__get__


def mro(cls: type) -> Tuple[type, ...]:
    return _mro(cls)


def namespace(cls: type) -> Mapping[str, Any]:
    """What ``vars(cls)`` gives, without asking ``cls``."""
    return _namespace(cls)


def module_of(cls: type) -> str:
    module = _module(cls)
    return module if type(module) is str else ""


def name(cls: type) -> str:
    return _name(cls)


def qualname(cls: type) -> str:
    return _qualname(cls)


def lookup(cls: type, name: str, default: Any = None) -> Any:
    """The attribute ``name`` as the class defines or inherits it, unbound."""
    for base in _mro(cls):
        found = _namespace(base)
        if name in found:
            return found[name]
    return default
