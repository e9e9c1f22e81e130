"""Packed store: a site's ingested samples as one memory-mapped array file per (site, settings).

A warm load of a large site used to open one decode-cache entry per image (and hash every file);
with the site index (:mod:`fedscan.common.ingest.index`) vouching for the files' hashes, the
store answers a load with one memory map of raw float32 frames (``<generation>.images.bin``, and
``.masks.bin`` for segmentation) and one JSON file of labels, groups and keys. The per-file
records (header facts, for reports) are a file of their own, read only when a report lists files;
the load's counts are kept beside them. A load whose quick key (:mod:`fedscan.common.ingest.quick`)
equals the one the store was last confirmed under skips the per-file steps altogether. The arrays
are written as the load reads each file (:mod:`fedscan.common.ingest.pack_writer`): a rebuild
holds one file's frames at a time.

Invariants:
- The store is used only when its fingerprint equals the load's: every scanned file's path and
  content hash (or its rejection before decoding), the labels CSV's bytes and label settings,
  every mask file's hash, the task's scheme and the decoding settings (the folder's key). Any
  change rebuilds it: unchanged files' frames are copied from the previous generation
  (:mod:`fedscan.common.ingest.pack_reuse`), the others read from the decode cache, which
  re-decodes only changed files.
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
import os
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, overload

import numpy as np

from fedscan.common.errors import DataError
from fedscan.common.ingest import pack_reuse
from fedscan.common.ingest.pack_reuse import Previous, Sources
from fedscan.common.ingest.pack_writer import PackWriter
from fedscan.common.ingest.report import FileRecord, Tally
from fedscan.common.ingest.samples import Samples
from fedscan.common.ingest.sealed import read_sealed, site_key, unseal, write_sealed

log = logging.getLogger(__name__)

_MAGIC = b"FSPACK2 "  # 2: records in a file of their own, the tally and the quick key
_RECORDS_MAGIC = b"FSRECORDS1 "


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
    arrays = _mapped(folder, meta, verify=verify)
    return None if arrays is None else (meta, arrays)


def _mapped(folder: Path, meta: dict[str, Any], *, verify: bool) -> dict[str, np.ndarray] | None:
    """The arrays ``meta`` describes, memory-mapped; None when one disagrees with it."""
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
    return arrays


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
    keep.update(str(meta.get(kind, {}).get("file", "")) for kind in ("records", "sources"))
    patterns = ("*.bin", "*.npy", "*.records.json", "*.sources.json")
    for stale in [path for pattern in patterns for path in folder.glob(pattern)]:
        if stale.name not in keep:
            stale.unlink(missing_ok=True)


@dataclass(frozen=True)
class Stored:
    """What a store answers a load with: the samples (memory-mapped), the per-file records (read
    on first use), the counts a load needs without them, and the quick key it was confirmed
    under."""

    samples: Samples
    records: Sequence[FileRecord]
    tally: Tally | None
    quick: str | None


@dataclass(frozen=True)
class PackedSite:
    """A site's store under one load's fingerprint."""

    folder: Path
    fingerprint: str
    verify: bool

    def load(self) -> Stored | None:
        """The stored samples and records, or None: rebuild."""
        return _stored(self.folder, load(self.folder, self.fingerprint, verify=self.verify))

    def writer(self) -> PackWriter:
        """A writer for a new generation of this store's arrays."""
        return PackWriter(self.folder, secrets.token_hex(6))

    def save(
        self,
        written: dict[str, Any],
        samples: Samples,
        records: list[FileRecord],
        *,
        sources: Sources,
        tally: Tally,
        quick: str | None,
    ) -> None:
        """Commit the arrays a writer wrote (``written``: their descriptions) with the samples'
        labels, groups and keys, the per-file records and the frames' sources (files of their
        own), the load's counts and its quick key (None: not settled)."""
        generation = secrets.token_hex(6)
        name, sourced = f"{generation}.records.json", f"{generation}.sources.json"
        try:
            write_sealed(self.folder / name, _RECORDS_MAGIC, records_to_json(records))
            sources.write(self.folder / sourced)
        except OSError as exc:
            log.warning("Cannot write the packed store (%s); the next load rebuilds", exc.strerror)
            return
        meta = {
            "labels": samples.labels.tolist(),
            "groups": list(samples.groups),
            "keys": list(samples.keys),
            "records": {"file": name, "count": len(records)},
            "sources": {"file": sourced},
            "tally": asdict(tally),
            "quick": quick,
        }
        commit(self.folder, self.fingerprint, written, meta)

    def previous(self) -> Previous | None:
        """The store's current generation, whatever its fingerprint, as the source of a
        rebuild's unchanged frames (:mod:`fedscan.common.ingest.pack_reuse`); None when it is
        absent, damaged or from before sources were kept."""
        meta = _read_meta(self.folder / "meta.json")
        described = meta.get("sources") if meta is not None else None
        if meta is None or not isinstance(described, dict) or "images" not in meta["arrays"]:
            return None
        arrays = _mapped(self.folder, meta, verify=self.verify)
        if arrays is None:
            return None
        return pack_reuse.read(self.folder / str(described.get("file")), arrays["images"])

    def confirm(self, quick: str) -> None:
        """Record ``quick`` as the key the store's content was just confirmed under (a file's
        stat changed, its content did not)."""
        meta = _read_meta(self.folder / "meta.json")
        if meta is not None and meta.get("fingerprint") == self.fingerprint:
            commit(self.folder, self.fingerprint, meta.pop("arrays"), {**meta, "quick": quick})


def load_quick(folder: Path, quick: str) -> Stored | None:
    """The store, when it was last confirmed under the quick key ``quick`` (see
    :mod:`fedscan.common.ingest.quick`); None otherwise."""
    meta = _read_meta(folder / "meta.json")
    if meta is None or meta.get("quick") != quick:
        return None
    return _stored(folder, load(folder, str(meta["fingerprint"])))


Found = tuple[dict[str, Any], dict[str, np.ndarray]]


def _stored(folder: Path, found: Found | None) -> Stored | None:
    if found is None:
        return None
    meta, arrays = found
    try:
        labels = np.asarray(meta["labels"], dtype=np.int64)
        groups, keys = tuple(meta["groups"]), tuple(meta["keys"])
        samples = Samples(arrays["images"], labels, groups, keys, arrays.get("masks"))
        described = meta["records"]
        tally = Tally(**meta["tally"])
        records = LazyRecords(folder / described["file"], int(described["count"]))
    except OSError:
        log.warning("The packed store's file records are missing; rebuilding it")
        return None
    except (KeyError, TypeError, ValueError):
        log.warning("The packed store's index is from another layout; rebuilding it")
        return None
    return Stored(samples, records, tally, meta.get("quick"))


class LazyRecords(Sequence[FileRecord]):
    """The per-file records of a store, read from their sealed file on first use. The file is
    opened at once: a later rebuild may remove it, and an open descriptor still reads it (as the
    arrays' memory maps do)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self._count = path, count
        self._records: list[FileRecord] | None = None
        descriptor = os.open(path, os.O_RDONLY)  # OSError: the caller rebuilds
        self._close = weakref.finalize(self, os.close, descriptor)
        self._descriptor = descriptor

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> FileRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[FileRecord]: ...
    def __getitem__(self, index: int | slice) -> FileRecord | Sequence[FileRecord]:
        return self._read()[index]

    def _read(self) -> list[FileRecord]:
        if self._records is None:
            with os.fdopen(os.dup(self._descriptor), "rb") as handle:
                stored = unseal(handle.read(), _RECORDS_MAGIC)
            self._close()
            if not isinstance(stored, list) or len(stored) != self._count:
                raise DataError(
                    "The packed store's file records are damaged; load the site again (the "
                    "store is rebuilt)."
                )
            self._records = records_from_json(stored)
        return self._records


_RECORD_FIELDS = tuple(f.name for f in fields(FileRecord))


def records_to_json(records: list[FileRecord]) -> list[dict[str, Any]]:
    # Not dataclasses.asdict: its deep copy of every header took 2.1 s of a 20 000-file rebuild.
    return [{name: getattr(record, name) for name in _RECORD_FIELDS} for record in records]


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
