"""A setting's value as its declared type: the converters every reader shares, and the names
of the types that errors and ``docs/reference.md`` use.

Invariant: a value is converted or refused, never guessed: a boolean is ``true``/``false`` only
(never any non-empty string), an integer is not a float with a fraction nor a boolean, a string is
not a table; each refusal is a ConfigError naming the setting and the type it needs.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError


def parse_bool(value: Any, *, what: str) -> bool:
    """A boolean setting: ``True``/``False``, or the words ``true``/``false`` (``flwr run
    --run-config`` passes strings); anything else is a ConfigError naming ``what``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{what} must be true or false, got {value!r}.")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _to_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(value)
    return str(value)


def _to_names(value: Any) -> tuple[str, ...]:
    """A list of names: a TOML array of strings, or one string of comma-separated names (the flat
    form, as Flower's run config carries it)."""
    if isinstance(value, str):
        value = value.split(",") if value.strip() else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(value)
    return tuple(name.strip() for name in value)


Names = tuple[str, ...]  # a setting holding an ordered list of names (classes, CSV columns)
_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Names: _to_names,
}


def convert(value: Any, kind: Any, *, what: str) -> Any:
    """``value`` as ``kind`` (bool, int, float, str, Names; any other kind as it is)."""
    plain = plain_type(kind)
    if plain is bool:
        return parse_bool(value, what=what)
    converter = _CONVERTERS.get(plain)
    if converter is None:
        return value
    try:
        return converter(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be {type_name(plain)}, got {value!r}.") from None


def plain_type(kind: Any) -> Any:
    """``X | None`` → ``X``."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [member for member in typing.get_args(kind) if member is not type(None)]
        return members[0] if len(members) == 1 else kind
    return kind


def type_name(kind: Any) -> str:
    plain = plain_type(kind)
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
        Names: "list of names",
    }
    name = names.get(plain, getattr(plain, "__name__", str(plain)))
    return f"{name} (optional)" if plain is not kind else name
