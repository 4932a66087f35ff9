"""A function recompiled from its own source file with statements of ours at its end.

Used for ``SemLock.__init__``: the result is the one frame CPython shows, in its own
file, at its own lines and columns, with its own qualified names. It is taken only if the
same source compiled without our statements gives the original's bytecode, constants and
line table, so an edited file, another version's file or no file at all leaves the
caller to its fallback.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an activated child milliseconds: not at run time
    from typing import Any, Callable, Dict, List, Optional


def with_tail(original: Callable, tail: str, names: Dict[str, Any]) -> Optional[Callable]:
    """``original`` with ``tail`` (unindented source) as its last statements, in which
    ``names`` are closure variables; None where that cannot be done exactly."""
    code = getattr(original, "__code__", None)
    if code is None or code.co_freevars or getattr(original, "__closure__", None):
        return None
    try:
        with open(code.co_filename, "rb") as source_file:
            lines = source_file.read().decode("utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return None
    block = _function_lines(lines, code.co_firstlineno)
    if block is None or any("return" in line for line in block):  # the tail must run last
        return None
    globals_ = getattr(original, "__globals__", None)
    if not isinstance(globals_, dict):
        return None
    body = " " * (len(block[0]) - len(block[0].lstrip()) + 4)
    appended = "".join(body + line + "\n" for line in tail.strip("\n").splitlines())
    plain, made = (
        _compile_in_place(original, block, extra, names, globals_) for extra in ("", appended)
    )
    if plain is None or made is None or not _same_code(plain.__code__, code):
        return None  # the file is not what runs (edited, or another version's)
    made.__qualname__ = original.__qualname__
    return made


def _function_lines(lines: List[str], first: int) -> Optional[List[str]]:
    """The lines of the ``def`` at line ``first`` (1-based): it and the lines indented
    deeper than it that follow."""
    if first < 2 or first > len(lines) or not lines[first - 1].lstrip().startswith("def "):
        return None
    head = lines[first - 1]
    indent = len(head) - len(head.lstrip())
    if indent == 0:
        return None  # a method's body keeps its columns inside the factory only if indented
    block = [head]
    for line in lines[first:]:
        stripped = line.strip()
        if stripped and len(line) - len(line.lstrip()) <= indent and not stripped.startswith("#"):
            break
        block.append(line)
    while block and not block[-1].strip():
        block.pop()
    return block


def _compile_in_place(
    original: Callable, block: List[str], extra: str, names: Dict[str, Any], globals_: Dict
) -> Optional[Callable]:
    """The function of ``block`` (plus ``extra``), compiled inside a factory whose
    parameters are ``names``, so that its lines and columns are the file's."""
    code = original.__code__  # type: ignore[attr-defined]
    indent = len(block[0]) - len(block[0].lstrip())
    factory = " " * (indent - 1) + "def _mps_factory(" + ", ".join(names) + "):\n"
    if indent - 1:
        factory = "if 1:\n" + factory  # an indented def needs a block around it
    # 3.12+ compile `module.name(...)` as a plain call where `module` is a name the module
    # imports: a line that never runs tells the compiler which names those are.
    modules = sorted(_global_names(code) & {k for k, v in globals_.items() if _is_module(v)})
    padding = "\n" * (code.co_firstlineno - factory.count("\n") - 1)
    if modules:
        padding = "if 0: import " + ", ".join(modules) + padding
    ret = " " * indent + f"return {code.co_name}\n"
    source = padding + factory + "".join(block) + ("\n" if not block[-1].endswith("\n") else "")
    source += extra + ret
    try:
        namespace: Dict[str, Any] = {}
        exec(compile(source, code.co_filename, "exec", dont_inherit=True), globals_, namespace)
        made = namespace["_mps_factory"](*names.values())
        made.__code__ = _requalified(
            made.__code__, f"_mps_factory.<locals>.{code.co_name}", original.__qualname__
        )
        return made
    except Exception:
        return None


def _requalified(code: Any, wrong: str, right: str) -> Any:
    """``code`` with the qualified names of what it defines (``_after_fork``) made the
    original's: ``SemLock.__init__.<locals>._after_fork``, not the factory's."""
    consts = []
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            const = _requalified(const, wrong, right)
        elif type(const) is str and const.startswith(wrong + "."):  # 3.9, 3.10
            const = right + const[len(wrong) :]
        consts.append(const)
    changes: Dict[str, Any] = {"co_consts": tuple(consts)}
    qualname = getattr(code, "co_qualname", None)  # 3.11+
    if qualname is not None and qualname.startswith(wrong):
        changes["co_qualname"] = right + qualname[len(wrong) :]
    return code.replace(**changes)


_NESTED = 0x10  # a code flag: defined inside a function (here, inside the factory)
_COMPARED = ("co_code", "co_names", "co_varnames", "co_firstlineno", "co_argcount")
_COMPARED += ("co_kwonlyargcount", "co_posonlyargcount", "co_cellvars", "co_freevars")


def _same_code(made: Any, original: Any) -> bool:
    """The same bytecode, names, lines and constants (recursively), the nesting aside."""
    if any(getattr(made, a, None) != getattr(original, a, None) for a in _COMPARED):
        return False
    table = "co_linetable" if hasattr(original, "co_linetable") else "co_lnotab"
    if getattr(made, table) != getattr(original, table):
        return False
    if made.co_flags & ~_NESTED != original.co_flags & ~_NESTED:
        return False
    if len(made.co_consts) != len(original.co_consts):
        return False
    for mine, theirs in zip(made.co_consts, original.co_consts):
        if hasattr(theirs, "co_code"):
            if not hasattr(mine, "co_code") or not _same_code(mine, theirs):
                return False
        elif type(mine) is not type(theirs) or mine != theirs:
            return False
    return True


def _global_names(code: Any) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _global_names(const)
    return names


def _is_module(value: Any) -> bool:
    return type(value).__name__ == "module" and hasattr(value, "__spec__")
