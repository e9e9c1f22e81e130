"""Writing and reading fedscan's own files: atomically, as standard JSON, TOML with errors that say
which file.

Invariant: every file fedscan rewrites in place (status, configs, checkpoints, ledger-adjacent
releases, cache entries, reports) goes through :func:`atomic_write_bytes`, so a reader — or a
process restarted after a crash — sees either the old content or all of the new, never a mix.
``durable=True`` (the default) also fsyncs the file and its folder, so the new content survives a
power cut once the call returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError


def atomic_write_bytes(
    path: Path, payload: bytes, *, durable: bool = True, private: bool = False
) -> None:
    """``path`` holds either its old content or all of ``payload``.

    The temporary file has a unique name in the same folder, so concurrent writers of one path (two
    sites sharing a cache) never write into each other's file; the last rename wins. ``private``
    files (stored releases, cache entries: they hold model updates or header identifiers) are 0600;
    others get the usual 0666 less the process's umask.
    """
    path = Path(path)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o600 if private else 0o666 & ~_umask())
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_directory(path.parent)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), else set and
    reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read 1 MB at a time (a checkpoint, a summary)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """Standard JSON from metrics: NaN and infinity (undefined or unbounded values) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: Path, document: Any, *, indent: int | None = 2) -> None:
    """``document`` as standard JSON (NaN and infinity as null), written atomically."""
    atomic_write_bytes(path, json.dumps(json_safe(document), indent=indent).encode())


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed document at ``path``; ``what`` ("site", "coordinator", …) names it in errors."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} configuration {path} ({exc.strerror}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
