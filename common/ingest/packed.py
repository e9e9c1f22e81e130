"""Packed store: a site's ingested samples as one memory-mapped array file per (site, settings).

A warm load of a large site used to open one decode-cache entry per image (and hash every file);
with the site index (:mod:`fedscan.common.ingest.index`) vouching for the files' hashes, the
store answers a load with one memory map of raw float32 frames (``<generation>.images.bin``, and
``.masks.bin`` for segmentation) and one small JSON file. The arrays are written as the load reads
each file (:mod:`fedscan.common.ingest.pack_writer`): a rebuild holds one file's frames at a time.

Invariants:
- The store is used only when its fingerprint equals the load's: every scanned file's path and
  content hash (or its rejection before decoding), the labels CSV's bytes and label settings,
  every mask file's hash, the task's scheme and the decoding settings (the folder's key). Any
  change rebuilds it from the decode cache, which re-decodes only changed files.
- Writes are atomic: the arrays go to files named by a fresh generation id, then ``meta.json``
  (checksummed, with each array's shape and content hash) names that generation by rename; older
  generations are removed after. A torn write leaves the previous store, or none; a damaged meta
  or an array whose size disagrees with it reads as absent, and the load rebuilds.
- ``verify`` also compares each array's content hash with the one recorded at writing.

The store holds relative paths, header identifiers and pixels: it lives at the site, in its cache
folder, private (0600), like the decode cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.ingest.pack_writer import PackWriter
from fedscan.common.ingest.report import FileRecord
from fedscan.common.ingest.samples import Samples
from fedscan.common.ingest.sealed import read_sealed, site_key, write_sealed

log = logging.getLogger(__name__)

_MAGIC = b"FSPACK1 "


def store_folder(cache_dir: Path, settings_key: str, site_dir: Path) -> Path:
    """``<cache>/<settings key>/packed/<site>``: one store per site folder and settings."""
    return cache_dir / settings_key / "packed" / site_key(site_dir)


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
        shape = tuple(int(n) for n in described["shape"])
        if not described["file"]:
            arrays[name] = np.zeros(shape, dtype=np.float32)
            continue
        path = folder / described["file"]
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        if size != 4 * int(np.prod(shape)):
            log.warning("The packed store's arrays disagree with its index; rebuilding it")
            return None
        array = np.memmap(path, np.float32, "r", shape=shape)
        if verify and _digest(array) != described["digest"]:
            log.warning("The packed store's content changed on disk; rebuilding it")
            return None
        arrays[name] = array
    return meta, arrays


def commit(folder: Path, expected: str, described: dict[str, Any], meta: dict[str, Any]) -> None:
    """Name the generation whose arrays ``described`` lists as the store (meta.json by atomic
    rename), then remove every other generation; a failure costs the next load time only."""
    try:
        write_sealed(
            folder / "meta.json", _MAGIC, {**meta, "fingerprint": expected, "arrays": described}
        )
    except OSError as exc:
        log.warning("Cannot write the packed store (%s); the next load rebuilds it", exc.strerror)
        return
    keep = {d["file"] for d in described.values() if d["file"]}
    for stale in [*folder.glob("*.bin"), *folder.glob("*.npy")]:
        if stale.name not in keep:
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

    def writer(self) -> PackWriter:
        """A writer for a new generation of this store's arrays."""
        return PackWriter(self.folder, secrets.token_hex(6))

    def save(self, written: dict[str, Any], samples: Samples, records: list[FileRecord]) -> None:
        """Commit the arrays a writer wrote (``written``: their descriptions) with the samples'
        labels, groups and keys and the per-file records."""
        meta = {
            "labels": samples.labels.tolist(),
            "groups": list(samples.groups),
            "keys": list(samples.keys),
            "records": records_to_json(records),
        }
        commit(self.folder, self.fingerprint, written, meta)


def records_to_json(records: list[FileRecord]) -> list[dict[str, Any]]:
    return [asdict(record) for record in records]


def records_from_json(stored: list[dict[str, Any]]) -> list[FileRecord]:
    return [FileRecord(**record) for record in stored]


def _digest(array: np.ndarray) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    flat = array.reshape(-1)
    step = 1 << 22  # 16 MB of float32 at a time: a memory-mapped array is never read whole
    for start in range(0, flat.size, step):
        hasher.update(np.ascontiguousarray(flat[start : start + step]).tobytes())
    return hasher.hexdigest()


def _read_meta(path: Path) -> dict[str, Any] | None:
    found, meta = read_sealed(path, _MAGIC)
    if found and meta is None:
        log.warning("The packed store's index was damaged; rebuilding it")
    return meta if isinstance(meta, dict) and isinstance(meta.get("arrays"), dict) else None
