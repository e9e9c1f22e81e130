"""Decode-once cache: preprocessed frames on disk, keyed by file content and settings.

An entry's name is the hash of the source file's bytes, inside a folder named by
the hash of every setting that shapes the output (decode options, model input
size, :data:`PIPELINE_VERSION`). A changed file gets a new name; a changed
setting a new folder. Each entry carries a checksum of its body: a damaged or
partial entry reads as a miss and is rebuilt, never trusted. Writes are atomic
(temporary file, then rename), so concurrent sites and crashes are safe.

Entries hold identifying header fields (the site's own, for matching labels);
the cache therefore belongs at the site, like the images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.files import atomic_write_bytes
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.rejections import Reason

log = logging.getLogger(__name__)

PIPELINE_VERSION = 1  # bump when decoding or preprocessing changes what an entry holds
_MAGIC = b"FSCACHE1"
_DIGEST = 16
_HEADER_LENGTH = struct.Struct("!I")


def default_cache_dir() -> str:
    """``$FEDSCAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fedscan``, else ``~/.cache/fedscan``."""
    if os.environ.get("FEDSCAN_CACHE_DIR"):
        return os.environ["FEDSCAN_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "fedscan")


def content_hash(path: Path) -> str:
    """Hash of a file's bytes, read in chunks (a large image never sits in memory twice)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


def settings_key(options: DecodeOptions, size: int) -> str:
    """One name for every setting that changes an entry's content."""
    chosen = asdict(options)
    if chosen["values"] == "display":  # the default kind leaves the key as it was before volumes
        del chosen["values"]
    described = json.dumps(
        {"version": PIPELINE_VERSION, "size": size, "options": chosen}, sort_keys=True
    )
    return hashlib.blake2b(described.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class CachedImage:
    """Frames (F×C×S×S float32) already preprocessed to the model's size, and header facts."""

    frames: np.ndarray
    header: dict[str, Any]


@dataclass(frozen=True)
class CachedRejection:
    reason: Reason
    message: str


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rebuilt: int = 0
    written: int = 0
    write_errors: int = 0
    hashed: int = 0  # files whose bytes were hashed (the others' stat matched the site index)
    hash_reused: int = 0
    packed: int = 0  # 1: the packed store answered the load (no entry read, nothing decoded)
    reused: int = 0  # files whose frames a rebuild copied from the previous store generation


@dataclass
class DecodeCache:
    """Entries under ``root/<settings key>/``; see the module docstring."""

    root: Path
    key: str
    stats: CacheStats = field(default_factory=CacheStats)

    def _path(self, digest: str) -> Path:
        return self.root / self.key / digest[:2] / f"{digest}.entry"

    def get(self, digest: str, *, count: bool = True) -> CachedImage | CachedRejection | None:
        """The entry, or None (a miss); ``count`` False: a re-read, left out of the stats."""
        path = self._path(digest)
        try:
            blob = path.read_bytes()
        except OSError:
            self.stats.misses += count
            return None
        entry = _parse(blob)
        if entry is None:
            log.warning("A cache entry was damaged; the file will be decoded again")
            self.stats.rebuilt += count
            self.stats.misses += count
            return None
        self.stats.hits += count
        return entry

    def put(self, digest: str, entry: CachedImage | CachedRejection) -> bool:
        """Write ``entry``; False when it could not be written (the caller keeps it)."""
        path = self._path(digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Not fsynced: an entry lost to a power cut is a miss (the checksum catches a torn one)
            # and is rebuilt, while an fsync per entry would slow a cold ingestion of thousands of
            # files.
            atomic_write_bytes(path, _serialise(entry), durable=False, private=True)
            self.stats.written += 1
            return True
        except OSError as exc:  # a full or read-only cache costs speed, never the ingestion
            self.stats.write_errors += 1
            log.warning(
                "Cannot write to the decode cache (%s); continuing without it", exc.strerror
            )
            return False


def _serialise(entry: CachedImage | CachedRejection) -> bytes:
    if isinstance(entry, CachedImage):
        frames = np.ascontiguousarray(entry.frames, dtype=np.float32)
        meta = {"kind": "image", "shape": list(frames.shape), "header": entry.header}
        data = frames.tobytes()
    else:
        meta, data = (
            {"kind": "rejected", "reason": entry.reason.value, "message": entry.message},
            b"",
        )
    encoded = json.dumps(meta).encode()
    body = _HEADER_LENGTH.pack(len(encoded)) + encoded + data
    return _MAGIC + hashlib.blake2b(body, digest_size=_DIGEST).digest() + body


def _parse(blob: bytes) -> CachedImage | CachedRejection | None:
    """The entry, or None when anything about it is wrong."""
    start = len(_MAGIC) + _DIGEST
    if len(blob) < start + _HEADER_LENGTH.size or not blob.startswith(_MAGIC):
        return None
    body = blob[start:]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != blob[len(_MAGIC) : start]:
        return None
    try:
        (length,) = _HEADER_LENGTH.unpack_from(body)
        meta = json.loads(body[_HEADER_LENGTH.size : _HEADER_LENGTH.size + length])
        if meta["kind"] == "rejected":
            return CachedRejection(Reason(meta["reason"]), str(meta["message"]))
        frames = np.frombuffer(body[_HEADER_LENGTH.size + length :], dtype=np.float32)
        return CachedImage(frames.reshape(meta["shape"]).copy(), dict(meta["header"]))
    except (ValueError, KeyError, TypeError):
        return None
