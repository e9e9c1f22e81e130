"""Packed store: a site's ingested samples as one memory-mapped array file per (site, settings).

A warm load of a large site used to open one decode-cache entry per image (and hash every file);
with the site index (:mod:`fedscan.common.ingest.index`) vouching for the files' hashes, the
store answers a load with one ``np.load(mmap_mode="r")`` and one small JSON file.

Invariants:
- The store is used only when its fingerprint equals the load's: every scanned file's path and
  content hash (or its rejection before decoding), the labels CSV's bytes and label settings,
  every mask file's hash, the task's scheme and the decoding settings (the folder's key). Any
  change rebuilds it from the decode cache, which re-decodes only changed files.
- Writes are atomic: the arrays go to files named by a fresh generation id, then ``meta.json``
  (checksummed) names that generation by rename; older generations are removed after. A torn
  write leaves the previous store, or none; a damaged meta or an array whose shape or size
  disagrees with it reads as absent, and the load rebuilds.
- ``verify`` also compares each array's content hash with the one recorded at writing.

The store holds relative paths, header identifiers and pixels: it lives at the site, in its cache
folder, private (0600), like the decode cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.files import atomic_write_bytes
from fedscan.common.ingest.report import FileRecord
from fedscan.common.ingest.samples import Samples

log = logging.getLogger(__name__)

_MAGIC = b"FSPACK1 "


def store_folder(cache_dir: Path, settings_key: str, site_dir: Path) -> Path:
    """``<cache>/<settings key>/packed/<site>``: one store per site folder and settings."""
    site = hashlib.blake2b(str(site_dir.resolve()).encode(), digest_size=10).hexdigest()
    return cache_dir / settings_key / "packed" / site


def fingerprint(parts: Any) -> str:
    """One hash of everything a load's samples depend on (``parts`` is JSON-serialisable)."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(encoded, digest_size=20).hexdigest()


def load(
    folder: Path, expected: str, *, verify: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(the stored metadata, the arrays memory-mapped) when the store matches ``expected``; None
    when it is absent, stale or damaged (the caller rebuilds it)."""
    meta = _read_meta(folder / "meta.json")
    if meta is None or meta.get("fingerprint") != expected:
        return None
    arrays: dict[str, np.ndarray] = {}
    for name, described in meta["arrays"].items():
        try:
            array = np.load(folder / described["file"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("The packed store is damaged (%s); rebuilding it", type(exc).__name__)
            return None
        if list(array.shape) != described["shape"] or str(array.dtype) != described["dtype"]:
            log.warning("The packed store's arrays disagree with its index; rebuilding it")
            return None
        if verify and _digest(array) != described["digest"]:
            log.warning("The packed store's content changed on disk; rebuilding it")
            return None
        arrays[name] = array
    return meta, arrays


def save(
    folder: Path,
    expected: str,
    arrays: dict[str, np.ndarray | None],
    meta: dict[str, Any],
) -> None:
    """Write a new generation of the store; a failure costs the next load time, never data."""
    generation = secrets.token_hex(6)
    described = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            if array is None:
                continue
            array = np.ascontiguousarray(array)
            file = f"{generation}.{name}.npy"
            temporary = folder / f".{file}.tmp"
            with open(temporary, "wb", opener=_private) as handle:
                np.save(handle, array, allow_pickle=False)
            temporary.replace(folder / file)
            described[name] = {
                "file": file,
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "digest": _digest(array),
            }
        body = json.dumps({**meta, "fingerprint": expected, "arrays": described}).encode()
        checksum = hashlib.blake2b(body, digest_size=16).hexdigest().encode()
        payload = _MAGIC + checksum + b"\n" + body
        atomic_write_bytes(folder / "meta.json", payload, durable=False, private=True)
    except OSError as exc:
        log.warning("Cannot write the packed store (%s); the next load rebuilds it", exc.strerror)
        return
    for stale in folder.glob("*.npy"):
        if not stale.name.startswith(generation):
            stale.unlink(missing_ok=True)


@dataclass(frozen=True)
class PackedSite:
    """A site's store under one load's fingerprint."""

    folder: Path
    fingerprint: str
    verify: bool

    def load(self) -> tuple[Samples, list[FileRecord]] | None:
        """The stored samples (memory-mapped) and per-file records, or None: rebuild."""
        found = load(self.folder, self.fingerprint, verify=self.verify)
        if found is None:
            return None
        meta, arrays = found
        labels = np.asarray(meta["labels"], dtype=np.int64)
        groups, keys = tuple(meta["groups"]), tuple(meta["keys"])
        samples = Samples(arrays["images"], labels, groups, keys, arrays.get("masks"))
        return samples, records_from_json(meta["records"])

    def save(self, samples: Samples, records: list[FileRecord]) -> None:
        meta = {
            "labels": samples.labels.tolist(),
            "groups": list(samples.groups),
            "keys": list(samples.keys),
            "records": records_to_json(records),
        }
        save(
            self.folder, self.fingerprint, {"images": samples.images, "masks": samples.masks}, meta
        )


def records_to_json(records: list[FileRecord]) -> list[dict[str, Any]]:
    return [asdict(record) for record in records]


def records_from_json(stored: list[dict[str, Any]]) -> list[FileRecord]:
    return [FileRecord(**record) for record in stored]


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _digest(array: np.ndarray) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    flat = array.reshape(-1)
    step = 1 << 22  # 16 MB of float32 at a time: a memory-mapped array is never read whole
    for start in range(0, flat.size, step):
        hasher.update(np.ascontiguousarray(flat[start : start + step]).tobytes())
    return hasher.hexdigest()


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head, _, body = blob.partition(b"\n")
    if head != _MAGIC + hashlib.blake2b(body, digest_size=16).hexdigest().encode():
        log.warning("The packed store's index was damaged; rebuilding it")
        return None
    try:
        meta = json.loads(body)
        return meta if isinstance(meta, dict) and isinstance(meta.get("arrays"), dict) else None
    except ValueError:
        return None
