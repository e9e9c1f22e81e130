"""A packed store's previous generation as the source of a rebuild's unchanged frames.

A load whose fingerprint differs from its store's (a file changed, was added or removed; the labels
CSV or a mask changed) used to rebuild every frame from the decode cache: one entry read per image,
15.5 s at 100 000 images for one changed file. The store's current generation already holds every
unchanged file's frames and header facts; a rebuild copies those from its memory map, by content
hash, and reads the decode cache (or decodes) only the files it lacks. Each generation keeps, beside
its arrays, a *sources* file: each accepted file's content hash, first frame and frame count, and
header facts.

Invariants:
- Frames are reused by content hash only. A file's frames depend on its bytes and the decode
  settings alone, and every generation in one store folder was written under the same settings
  (the folder is named by their key).
- A previous generation is a source only when its index, its sources file and its arrays agree
  (array sizes; under ``verify`` each array's recorded content hash too), as for a load; otherwise
  nothing is reused and the rebuild reads the decode cache, as before.
- Only accepted images are reused, never a decision: labels, masks and rejections are settled
  anew by the rebuild.

The sources file holds content hashes and header facts: it lives at the site, beside the store
(0600), and never leaves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.ingest.cache import CachedImage
from fedscan.common.ingest.sealed import read_sealed, write_sealed

log = logging.getLogger(__name__)

_MAGIC = b"FSSOURCES1 "


@dataclass
class Sources:
    """Where each accepted file's frames sit in a generation being written, in path order."""

    digests: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    headers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, digest: str, start: int, count: int, header: dict[str, Any]) -> None:
        self.digests.append(digest)
        self.starts.append(start)
        self.counts.append(count)
        self.headers.append(header)

    def write(self, path: Path) -> None:
        """Seal the sources into ``path`` (raises OSError when it cannot)."""
        columns = [self.digests, self.starts, self.counts, self.headers]
        write_sealed(path, _MAGIC, columns)


@dataclass(frozen=True)
class Previous:
    """A generation's frames by content hash, served from its memory-mapped images."""

    images: np.ndarray
    found: dict[str, tuple[int, int, dict[str, Any]]]

    def take(self, digest: str) -> CachedImage | None:
        """The frames (a view into the memory map) and header of the file with content hash
        ``digest``, or None when the generation does not hold it."""
        hit = self.found.get(digest)
        if hit is None:
            return None
        start, count, header = hit
        return CachedImage(self.images[start : start + count], header)


def read(path: Path, images: np.ndarray) -> Previous | None:
    """The generation's sources over its ``images``, or None when the file is absent, damaged or
    disagrees with the images (then nothing is reused)."""
    found, document = read_sealed(path, _MAGIC)
    if not found:
        return None
    try:
        digests, starts, counts, headers = document
        table = {
            str(d): (int(s), int(c), dict(h))
            for d, s, c, h in zip(digests, starts, counts, headers, strict=True)
        }
        inside = all(0 <= s and s + c <= len(images) for s, c, _ in table.values())
    except (TypeError, ValueError):
        inside = False
    if not inside:
        log.warning("The packed store's sources file is damaged; rebuilding from the decode cache")
        return None
    return Previous(images, table) if table else None
