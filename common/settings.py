"""Settings as frozen dataclasses: read from a flat run config or a TOML section, documented from
themselves.

Invariant: a setting's key, type, default and meaning live once, on its dataclass field
(:func:`setting`). Reading (``site.toml``, ``coordinator.toml``, the run config), the errors that
name a bad key, and ``docs/reference.md`` (``python -m fedscan.cli.reference``) are all derived
from the fields, so they cannot disagree. Keys are the field names in kebab-case unless a field
says otherwise. Unknown keys are errors that list the valid ones; a field without a default is
required; values are converted by :mod:`fedscan.common.values` (booleans only ``true``/``false``,
never any non-empty string).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError
from fedscan.common.protocol import config_key
from fedscan.common.values import convert, plain_type, type_name

_NO_DEFAULT: Any = dataclasses.MISSING


def setting(default: Any, *, help: str, **options: Any) -> Any:
    """A dataclass field with a default, and its documentation (``options``: see :func:`described`).

    A required setting has no default: ``field(metadata=described(help=...))``, so that type
    checkers see it as required too.
    """
    return field(default=default, metadata=described(help=help, **options))


def described(
    *,
    help: str,
    key: str = "",
    path: bool = False,
    flat: bool = True,
    wire: bool | str = False,
    read_default: Callable[[], Any] | None = None,
    default_text: str = "",
    omit_default: bool = False,
) -> dict[str, Any]:
    """A setting's documentation and how it is read, as dataclass field metadata.

    Parameters
    ----------
    help : what the setting means (the reference's text)
    key : its key, when not the field name in kebab-case
    path : a path, resolved relative to the TOML file that sets it
    flat : part of the flat run config (False: set by the site from other keys)
    wire : sent to every site with each request (run settings only); ``UNLESS_DEFAULT``: sent
        only when not at its default, and a request without it means the default (a setting
        sites learned later: the messages of earlier versions stay as they were)
    read_default : the default when read from a TOML file, if it differs from the programmatic one
        (e.g. the user's cache folder), with ``default_text`` describing it
    omit_default : left out of the flat form and messages while it holds its default (a setting
        added later: what earlier versions wrote and sent stays exactly as it was)
    """
    return {
        "help": help,
        "key": key,
        "path": path,
        "flat": flat,
        "wire": wire,
        "read_default": read_default,
        "default_text": default_text,
        "omit_default": omit_default,
    }


@dataclass(frozen=True)
class Key:
    """One setting as a reader sees it: its key, where it goes, and its documentation."""

    name: str
    owner: type
    path: tuple[str, ...]  # field names from the section's dataclass down to this field
    kind: Any
    spec: dataclasses.Field

    @property
    def required(self) -> bool:
        return (
            self.spec.default is _NO_DEFAULT
            and self.spec.default_factory is _NO_DEFAULT
            and self.spec.metadata.get("read_default") is None
        )

    @property
    def help(self) -> str:
        return str(self.spec.metadata.get("help", ""))

    @property
    def type_name(self) -> str:
        name = type_name(self.kind)
        return name.replace("string", "path") if self.spec.metadata.get("path") else name

    @property
    def default_text(self) -> str:
        """The default as the reference shows it."""
        if self.spec.metadata.get("default_text"):
            return str(self.spec.metadata["default_text"])
        if self.required:
            return "required"
        value = self.spec.default if self.spec.default is not _NO_DEFAULT else None
        return _toml_literal(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested(kind: Any) -> type | None:
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def keys_of(
    cls: type, *, only: tuple[str, ...] = (), exclude: tuple[str, ...] = (), flat_only: bool = False
) -> list[Key]:
    """Every key of ``cls``, nested dataclass fields flattened in (their own fields become keys)."""
    return list(_walk(cls, (), only=only, exclude=exclude, flat_only=flat_only))


def _walk(
    cls: type,
    prefix: tuple[str, ...],
    *,
    only: tuple[str, ...],
    exclude: tuple[str, ...],
    flat_only: bool,
) -> Iterator[Key]:
    for spec in dataclasses.fields(cls):
        if (only and spec.name not in only) or spec.name in exclude or spec.name.startswith("_"):
            continue
        if flat_only and not spec.metadata.get("flat", True):
            continue
        kind = _hints(cls)[spec.name]
        if (inner := _nested(kind)) is not None:
            yield from _walk(inner, (*prefix, spec.name), only=(), exclude=(), flat_only=flat_only)
        elif "help" in spec.metadata:
            yield Key(
                spec.metadata["key"] or config_key(spec.name), cls, (*prefix, spec.name), kind, spec
            )


@dataclass(frozen=True)
class Section:
    """A TOML section read into (some fields of) one dataclass."""

    name: str
    owner: type
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def keys(self) -> list[Key]:
        return keys_of(self.owner, only=self.only, exclude=self.exclude)

    def read(
        self, values: Mapping[str, Any], *, where: str, base: Path | None = None
    ) -> dict[str, Any]:
        """Constructor arguments of ``owner`` from the keys given (defaults stay the dataclass's
        own)."""
        keys = {key.name: key for key in self.keys()}
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) in [{self.name}]: {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(keys))}."
            )
        found: dict[tuple[str, ...], Any] = {}
        for name, key in keys.items():
            if name in values and values[name] not in ("", None):
                found[key.path] = coerce(values[name], key, what=f"[{self.name}] {name}", base=base)
            elif key.spec.metadata.get("read_default") is not None:
                found[key.path] = key.spec.metadata["read_default"]()
            elif key.required:
                raise ConfigError(f"{where}: [{self.name}] {name} is required.")
        return nest(self.owner, found)


def nest(cls: type, values: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """Keyword arguments of ``cls`` from values by field path, building nested dataclasses."""
    arguments: dict[str, Any] = {}
    inner: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            arguments[path[0]] = value
        else:
            inner.setdefault(path[0], {})[path[1:]] = value
    for name, nested_values in inner.items():
        arguments[name] = _hints(cls)[name](**nest(_hints(cls)[name], nested_values))
    return arguments


def coerce(value: Any, key: Key, *, what: str, base: Path | None = None) -> Any:
    """``value`` as the field's type; a ConfigError naming ``what`` when it cannot be."""
    kind = plain_type(key.kind)
    if key.spec.metadata.get("path"):
        if kind is str and not str(value).strip():
            return ""  # an optional path left empty: no file (not the current folder)
        resolved = Path(str(value)).expanduser()
        resolved = (base / resolved).resolve() if base is not None else resolved
        return resolved if kind is Path else str(resolved)
    return convert(value, kind, what=what)


UNLESS_DEFAULT = "unless-default"  # ``setting(wire=...)``: sent only when not at its default


def optional_on_the_wire(key: Key) -> bool:
    """Whether a request may leave ``key`` out (meaning its default)."""
    return bool(key.spec.metadata.get("omit_default")) or key.spec.metadata.get("wire") == (
        UNLESS_DEFAULT
    )


def flatten(instance: Any, *, wire_only: bool = False) -> dict[str, Any]:
    """The flat form of a settings object: every flat key, nested settings included."""
    flat: dict[str, Any] = {}
    for key in wire_keys(type(instance)) if wire_only else keys_of(type(instance), flat_only=True):
        value = instance
        for name in key.path:
            value = getattr(value, name)
        if key.spec.metadata.get("omit_default") and value == key.spec.default:
            continue
        if wire_only and key.spec.metadata.get("wire") == UNLESS_DEFAULT:
            if value == key.spec.default:
                continue
        flat[key.name] = ",".join(value) if isinstance(value, tuple) else value
    return flat


def omitted_defaults(cls: type) -> list[Key]:
    """The keys of ``cls`` left out of flat forms and messages while at their default."""
    return [key for key in keys_of(cls) if key.spec.metadata.get("omit_default")]


def wire_keys(cls: type) -> list[Key]:
    """The flat keys sent to sites: the fields marked ``wire``, and every flat field of a nested
    settings field marked ``wire``."""
    wired = {spec.name for spec in dataclasses.fields(cls) if spec.metadata.get("wire")}
    return [
        key
        for key in keys_of(cls, flat_only=True)
        if key.spec.metadata.get("wire") or (len(key.path) > 1 and key.path[0] in wired)
    ]


def _toml_literal(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return repr(value)
