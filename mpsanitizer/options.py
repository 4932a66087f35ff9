"""One option model for every way in: runner flags, environment, pytest ini.

``MPSANITIZE`` switches the sanitizer on (``1``, ``error``, ``warn``, ``strict``) or
leaves it off (``0``, ``false``, ``no``, ``off``, empty). ``MPSANITIZE_OPTIONS`` holds
``key=value`` pairs separated by ``:`` or ``,`` in the style of ``ASAN_OPTIONS``
(``log_path`` must therefore contain neither, and is refused when it does).
"""

from .config import MAX_STACK_DEPTH, Settings, checked_log_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Mapping, Optional

TOGGLE = "MPSANITIZE"
OPTIONS = "MPSANITIZE_OPTIONS"
OFF = frozenset({"", "0", "false", "no", "off"})
ON = {
    "1": {},
    "true": {},
    "yes": {},
    "on": {},
    "error": {"mode": "error"},
    "warn": {"mode": "warn"},
    "strict": {"strict": True},
}
KEYS = ("mode", "strict", "stack_depth", "log_path")


class OptionError(ValueError):
    """A bad option value: reported as one line, never a traceback."""


def toggle_value(
    environ: "Mapping[str, str]", source: str = TOGGLE
) -> "Optional[Dict[str, object]]":
    """Options implied by ``MPSANITIZE``, or None when it leaves the sanitizer off."""
    raw = environ.get(TOGGLE, "").strip().lower()
    if raw in OFF:
        return None
    if raw not in ON:
        raise OptionError(
            f"{source}={environ.get(TOGGLE)!r} is not understood: use 1, error, warn or strict "
            "to turn mpsanitizer on, 0, off or empty to leave it off"
        )
    return dict(ON[raw])


def parse_pairs(text: str, source: str = OPTIONS) -> "Dict[str, object]":
    """``mode=warn:strict=1:stack_depth=12`` -> typed values."""
    values: Dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.replace(",", ":").split(":"))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise OptionError(f"{source}: {item!r} is not key=value")
        value = value.strip()
        values[key] = convert(key, value, source)
    return values


def convert(key: str, value: object, source: str) -> object:
    """Check one option and give it its type."""
    if key == "mode":
        value = value.strip().lower() if isinstance(value, str) else value  # as the toggle
        if value not in ("error", "warn"):
            raise OptionError(f"{source}: mode must be error or warn, not {value!r}")
        return value
    if key == "strict":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"{source}: strict must be true or false, not {value!r}")
    if key == "stack_depth":
        try:
            depth = int(str(value))
        except ValueError:
            depth = 0
        if not 1 <= depth <= MAX_STACK_DEPTH:
            raise OptionError(
                f"{source}: stack_depth must be an integer from 1 to {MAX_STACK_DEPTH}, "
                f"not {value!r}"
            )
        return depth
    if key == "log_path":
        text = str(value).strip()
        if not text:
            raise OptionError(f"{source}: log_path needs a path")
        try:
            return checked_log_path(text)
        except ValueError as exc:
            raise OptionError(f"{source}: {exc}") from None
    raise OptionError(f"{source}: unknown option {key!r} (known: {', '.join(KEYS)})")


def settings_from(*layers: "Mapping[str, object]") -> "Settings":
    """Merge option layers, lowest precedence first."""
    merged: Dict[str, object] = {}
    for layer in layers:
        merged.update(layer)
    return Settings(**merged)  # type: ignore[arg-type]


def from_environment(environ: "Mapping[str, str]") -> "Optional[Settings]":
    """Settings when the environment turns the sanitizer on, else None."""
    toggle = toggle_value(environ)
    if toggle is None:
        return None
    return settings_from(parse_pairs(environ.get(OPTIONS, "")), toggle)


def to_environment(settings: "Settings") -> "Dict[str, str]":
    """The variables that make child interpreters run with these settings."""
    pairs = f"mode={settings.mode}:strict={int(settings.strict)}:stack_depth={settings.stack_depth}"
    if settings.log_path:
        pairs += f":log_path={settings.log_path}"
    return {TOGGLE: "1", OPTIONS: pairs}
