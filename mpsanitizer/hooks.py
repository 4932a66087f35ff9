"""The creation hooks: replacement constructors with the original's own signature.

Every Lock-like object passes through ``SemLock.__init__``, and a JoinableQueue
builds eight SemLocks and three composites, so these run many times per object
the user makes. They are plain functions generated from the original's
signature, as :mod:`dataclasses` generates ``__init__``: a wrapt wrapper (a
bound proxy and packed arguments per call) or ``*args, **kwargs`` forwarding
costs more than the whole budget of a ``Lock()``. ``SemLock.__init__`` is
recompiled from its own source with the record at its end (:func:`_inline`).
"""

from __future__ import annotations

import functools
import threading

from . import flavours, origins, recompile

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Callable, Dict, Optional, Tuple

# The record of a new SemLock, as the last statements of its ``__init__``.
_SEMLOCK_TAIL = """
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

# The forwarder, where SemLock.__init__ cannot be recompiled with the tail (see _inline).
_SEMLOCK = "\ndef {name}({params}):\n    _mps_original({call})\n" + "".join(
    f"    {line}\n" for line in _SEMLOCK_TAIL.strip("\n").splitlines()
)

_COMPOSITE = """
def {name}({params}):
    _mps_thread = _mps_ident()
    if _mps_building and _mps_thread in _mps_building:
        return _mps_original({call})
    try:
        _mps_building[_mps_thread] = _mps_tracker.make_composite(1, None)
    except Exception as _mps_exc:
        _mps_fail(_mps_exc)
        return _mps_original({call})
    try:
        return _mps_original({call})
    finally:
        _mps_building.pop(_mps_thread, None)
"""

_FORK_LAUNCH = """
def {name}({params}):
    if _mps_tracker.foreign:  # else nothing a fork child gets can be from another context
        _mps_error = _mps_check({first}, {second})
        if _mps_error is not None:
            raise _mps_error
    return _mps_original({call})
"""

_GENERIC = ("*_mps_args, **_mps_kwargs", "*_mps_args, **_mps_kwargs", "_mps_args[0]")
_GENERIC_SECOND = "(_mps_args[1] if len(_mps_args) > 1 else _mps_kwargs.get('process_obj'))"


def semlock_hook(original: Callable) -> Callable:
    """``SemLock.__init__`` that attaches an origin to each new SemLock: the original's own
    code with the record appended where its source can be had, else a forwarder."""
    key = ("inline", id(original), 0)
    cached = _generated.get(key)
    if cached is not None and cached[0] is original:
        return cached[1]
    hook = _inline(original, _SEMLOCK_TAIL)
    if hook is None:
        return _generate(_SEMLOCK, original)
    if len(_generated) < 1000:
        _generated[key] = (original, hook)
    return hook


def composite_hook(original: Callable) -> Callable:
    """The constructor of a Queue, Event, Condition, Barrier or synchronized Value or
    Array: one stack for the object, shared by the SemLocks built inside it."""
    return _generate(_COMPOSITE, original)


def fork_launch_hook(original: Callable, check: Callable) -> Callable:
    """fork's ``Popen._launch``, which forks: ``check(popen, process)`` first, and the
    error it returns raised, once a record born outside fork exists.

    Generated, not a wrapt wrapper: whatever a wrapper allocates (a bound wrapper, the
    packed arguments) is freed after the fork, when each page it writes is shared with
    the child and copied (about 17 page faults, 20 µs, in every fork start)."""
    return _generate(_FORK_LAUNCH, original, _mps_check=check)


_generated: Dict[Tuple[str, int, int], Tuple[Callable, Callable]] = {}  # -> (original, hook)


def _generate(template: str, original: Callable, **names: Callable) -> Callable:
    """The hook for ``original``, made once: enabling again reuses it instead of compiling
    a new one each time. ``names``: more names the hook's code uses."""
    key = (template, id(original), hash(tuple(map(id, names.values()))))
    cached = _generated.get(key)
    if cached is not None and cached[0] is original:
        return cached[1]
    hook = _make(template, original, names)
    if len(_generated) < 1000:
        _generated[key] = (original, hook)
    return hook


def _make(template: str, original: Callable, names: Dict[str, Callable]) -> Callable:
    spelled = _spell(original)
    code = getattr(original, "__code__", None)
    if spelled is None or code.co_argcount < 2:
        second = _GENERIC_SECOND  # the process: where a generic ``_launch`` would get it
        if template is _FORK_LAUNCH:
            spelled = None
    else:
        second = code.co_varnames[1]
    params, call, first = spelled or _GENERIC
    has_ctx = spelled is not None and _has_parameter(original, "ctx")
    ctx = "ctx" if has_ctx else "_mps_kwargs.get('ctx')" if spelled is None else "None"
    source = template.format(
        name="hook", params=params, call=call, first=first, second=second, ctx=ctx
    )
    namespace: Dict[str, Any] = {
        **names,
        # Its frames are its constructor's module's, as multiprocessing's are not the user's.
        "__name__": getattr(original, "__module__", None) or __name__,
        "_mps_original": original,
        **_record_names(original),
    }
    exec(compile(source, f"<mpsanitizer hook for {original.__qualname__}>", "exec"), namespace)
    hook = namespace["hook"]
    hook.__defaults__ = getattr(original, "__defaults__", None)
    hook.__kwdefaults__ = getattr(original, "__kwdefaults__", None)
    return functools.wraps(original)(hook)


def _record_names(original: Callable) -> Dict[str, Any]:
    """What the code of a hook of ``original`` names to make its record."""
    package = flavours.package_of(getattr(original, "__module__", None)) or flavours.STANDARD
    return {
        "_mps_building": origins.building,
        "_mps_ident": threading.get_ident,
        "_mps_tracker": origins.tracker,
        "_mps_start_method": origins.start_method_of(package),
        "_mps_fail": origins.fail,
    }


def _inline(original: Callable, tail: str) -> Optional[Callable]:
    """``original`` recompiled with ``tail`` (its first parameter and ``ctx`` filled in) as
    its last statements, or None: a creation that fails then shows CPython's own
    traceback, one frame, instead of a forwarder's frame above the original's."""
    spelled = _spell(original)
    if spelled is None:
        return None
    ctx = "ctx" if _has_parameter(original, "ctx") else "None"
    hook = recompile.with_tail(
        original, tail.format(first=spelled[2], ctx=ctx), _record_names(original)
    )
    if hook is None:
        return None
    hook.__defaults__ = original.__defaults__  # type: ignore[attr-defined]
    hook.__kwdefaults__ = original.__kwdefaults__  # type: ignore[attr-defined]
    return functools.wraps(original)(hook)


_VARARGS, _VARKEYWORDS = 0x04, 0x08  # code flags (inspect.CO_*, without importing inspect)


def _spell(function: Callable) -> Optional[Tuple[str, str, str]]:
    """The parameter list, the forwarding call and the first parameter of ``function``,
    or None when they cannot be spelled exactly (not a Python function, a clashing name).

    Read from the code object, not ``inspect.signature``: importing inspect would add
    milliseconds to every activated child that creates a primitive."""
    code = getattr(function, "__code__", None)
    if code is None or not code.co_argcount:
        return None
    positional = code.co_varnames[: code.co_argcount]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    rest = iter(code.co_varnames[code.co_argcount + code.co_kwonlyargcount :])
    star = next(rest) if code.co_flags & _VARARGS else None
    double_star = next(rest) if code.co_flags & _VARKEYWORDS else None
    names = [*positional, *keyword_only, star or "", double_star or ""]
    if any(name.startswith("_mps_") for name in names):
        return None
    params, call = list(positional), list(positional)  # positional (only or not): as such
    if star:
        params.append(f"*{star}")
        call.append(f"*{star}")
    elif keyword_only:
        params.append("*")
    params += keyword_only
    call += [f"{name}={name}" for name in keyword_only]
    if double_star:
        params.append(f"**{double_star}")
        call.append(f"**{double_star}")
    return ", ".join(params), ", ".join(call), positional[0]


def _has_parameter(function: Callable, name: str) -> bool:
    code = function.__code__  # type: ignore[attr-defined]
    return name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
