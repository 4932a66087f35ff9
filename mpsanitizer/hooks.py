"""The creation hooks: replacement constructors with the original's own signature.

Every Lock-like object passes through ``SemLock.__init__``, and a JoinableQueue
builds eight SemLocks and three composites, so these run many times per object
the user makes. They are plain functions generated from the original's
signature, as :mod:`dataclasses` generates ``__init__``: a wrapt wrapper (a
bound proxy and packed arguments per call) or ``*args, **kwargs`` forwarding
costs more than the whole budget of a ``Lock()``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import origins, stacks

_SEMLOCK = """
def {name}({params}):
    _mps_original({call})
    try:
        if _mps_building:  # some thread builds a composite: is it this one?
            _mps_origin = _mps_building.get(_mps_ident())
            if _mps_origin is not None:
                if _mps_origin[0] is None:
                    _mps_origin[0] = _mps_start_method({ctx})
                {first}._mpsanitizer_origin = _mps_origin
                return
        {first}._mpsanitizer_origin = _mps_tracker.make(1, _mps_start_method({ctx}))
    except Exception as _mps_exc:
        _mps_fail(_mps_exc)
"""

_COMPOSITE = """
def {name}({params}):
    _mps_thread = _mps_ident()
    if _mps_building and _mps_thread in _mps_building:
        return _mps_original({call})
    try:
        _mps_building[_mps_thread] = _mps_tracker.make(1, None)
    except Exception as _mps_exc:
        _mps_fail(_mps_exc)
        return _mps_original({call})
    try:
        return _mps_original({call})
    finally:
        _mps_building.pop(_mps_thread, None)
"""

_GENERIC = ("*_mps_args, **_mps_kwargs", "*_mps_args, **_mps_kwargs", "_mps_args[0]")


def semlock_hook(original: Callable) -> Callable:
    """``SemLock.__init__`` that attaches an origin to each new SemLock."""
    return _generate(_SEMLOCK, original)


def composite_hook(original: Callable) -> Callable:
    """The constructor of a Queue, Event, Condition, Barrier or synchronized Value or
    Array: one stack for the object, shared by the SemLocks built inside it."""
    return _generate(_COMPOSITE, original)


_generated: Dict[Tuple[str, int], Tuple[Callable, Callable]] = {}  # -> (original, hook)


def _generate(template: str, original: Callable) -> Callable:
    """The hook for ``original``, made once: enabling again reuses it (each new code
    object would stay in the frame classification tables)."""
    cached = _generated.get((template, id(original)))
    if cached is not None and cached[0] is original:
        return cached[1]
    hook = _make(template, original)
    if len(_generated) < 1000:
        _generated[(template, id(original))] = (original, hook)
    return hook


def _make(template: str, original: Callable) -> Callable:
    spelled = _spell(original)
    params, call, first = spelled or _GENERIC
    has_ctx = spelled is not None and "ctx" in inspect.signature(original).parameters
    ctx = "ctx" if has_ctx else "_mps_kwargs.get('ctx')" if spelled is None else "None"
    source = template.format(name="hook", params=params, call=call, first=first, ctx=ctx)
    namespace: Dict[str, Any] = {
        "_mps_original": original,
        "_mps_building": origins.building,
        "_mps_ident": threading.get_ident,
        "_mps_tracker": origins.tracker,
        "_mps_start_method": origins.start_method,
        "_mps_fail": origins.fail,
    }
    exec(compile(source, f"<mpsanitizer hook for {original.__qualname__}>", "exec"), namespace)
    hook = namespace["hook"]
    stacks.mark_internal(hook.__code__)
    hook.__defaults__ = getattr(original, "__defaults__", None)
    hook.__kwdefaults__ = getattr(original, "__kwdefaults__", None)
    return functools.wraps(original)(hook)


def _spell(function: Callable) -> Optional[Tuple[str, str, str]]:
    """The parameter list, the forwarding call and the first parameter of ``function``,
    or None when they cannot be spelled exactly (no signature, a clashing name)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or any(p.name.startswith("_mps_") for p in parameters):
        return None
    params: List[str] = []
    call: List[str] = []
    star_seen = False
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            call.append(f"*{p.name}")
            star_seen = True
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}")
            call.append(f"**{p.name}")
        elif p.kind is p.KEYWORD_ONLY:
            if not star_seen:
                params.append("*")
                star_seen = True
            params.append(p.name)
            call.append(f"{p.name}={p.name}")
        else:  # positional (only or not): passed on positionally
            params.append(p.name)
            call.append(p.name)
    first = parameters[0]
    if first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        return None
    return ", ".join(params), ", ".join(call), first.name
