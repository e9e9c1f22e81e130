"""Site index: each file's stat → its content hash, so a load re-hashes only what changed.

Hashing every file's bytes is what a warm load of a large archive costs (300 DICOMs of 2048² took
29–40 s, nearly all of it re-hashing; 50 000 radiographs would take ≈ 18 minutes per message). The
index keeps, per relative path, the size, mtime_ns, ctime_ns and inode a file had when it was
hashed, and the hash.

Invariants:
- An entry is used only when all four stat fields match exactly, and only when the file's ctime
  was already ``RACY_NS`` old when it was hashed: a file written within a timestamp tick of its
  hashing could change again without changing its stat (git's "racy" entries); it is re-hashed
  until it has settled. ``verify`` re-hashes everything.
- The file is written atomically with a checksum of its body; a damaged, partial or foreign index
  reads as empty (every file re-hashed, the index rewritten), never trusted.
- Saving keeps exactly the files seen by this load: a removed file's entry goes, an added or
  changed file's entry is its new hash, every other entry is unchanged.

The index holds the site's relative paths: it lives at the site, in its cache folder (0600).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedscan.common.ingest.cache import content_hash
from fedscan.common.ingest.sealed import read_sealed, site_key, write_sealed

log = logging.getLogger(__name__)

_MAGIC = b"FSINDEX1 "
_VERSION = 1
RACY_NS = 2_000_000_000  # coarser than any file system's timestamp tick (FAT: 2 s)
Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
_now_ns = time.time_ns  # the clock file times are compared with (tests move it)


def index_path(cache_dir: Path, site_dir: Path) -> Path:
    """One index per site folder (by its resolved path) under the cache folder."""
    return cache_dir / "index" / f"{site_key(site_dir)}.json"


@dataclass
class SiteIndex:
    """The stat → hash index of one site folder; see the module docstring."""

    path: Path | None  # None: no cache folder, so nothing is kept between loads
    verify: bool = False
    known: dict[str, list] = field(default_factory=dict)
    seen: dict[str, list] = field(default_factory=dict)
    hashed: int = 0
    reused: int = 0

    @classmethod
    def open(cls, path: Path | None, *, verify: bool = False) -> SiteIndex:
        return cls(path, verify, _read(path) if path is not None and not verify else {})

    def digest(self, file: str | Path, relative: str) -> str:
        """The content hash of ``file``: from the index when its stat is unchanged and settled,
        else read and hashed (raises OSError when it cannot be read)."""
        stat = _stat(file)
        entry = self.known.get(relative)
        if entry is not None and tuple(entry[:4]) == stat and stat[2] + RACY_NS < entry[5]:
            self.reused += 1
            self.seen[relative] = entry
            return str(entry[4])
        hashed_at = _now_ns()
        digest = content_hash(Path(file))
        self.hashed += 1
        self.seen[relative] = [*stat, digest, hashed_at]
        return digest

    def save(self) -> None:
        """Keep the files seen by this load; a failed write costs the next load time, not data."""
        if self.path is None or self.seen == self.known:
            return  # unchanged: rewriting 100 000 entries cost 0.2 s of a warm load
        try:
            write_sealed(self.path, _MAGIC, {"version": _VERSION, "files": self.seen})
        except OSError as exc:
            log.warning("Cannot write the site index (%s); the next load re-hashes", exc.strerror)


def _stat(file: str | Path) -> Stat:
    status = os.stat(file)
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino


def _read(path: Path) -> dict[str, list]:
    """The index's entries, or {} when it is missing or anything about it is wrong."""
    found, document = read_sealed(path, _MAGIC)
    if document is None:
        if found:
            log.warning("The site index was damaged; every file will be hashed again")
        return {}
    try:
        files = document["files"] if document["version"] == _VERSION else {}
        return {str(k): list(v) for k, v in files.items() if len(v) == 6}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
