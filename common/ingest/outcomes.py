"""Each file's outcome during ingestion: its content hash (or a rejection settled without
reading it further), its reuse from the previous packed store or the decode cache, and what a
decoded file leaves (pixels resized once to the settings' size, or a rejection).

Invariant: a file's record is written once, accepted or rejected with a code; a transient
rejection (unreadable, decoder missing, decoder time-out) is never cached, so the next load tries
the file again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.cache import CachedImage, CachedRejection
from fedscan.common.ingest.collect import Held, ScanState
from fedscan.common.ingest.decoded import Decoded
from fedscan.common.ingest.rejections import TRANSIENT, Reason
from fedscan.common.ingest.report import FileRecord


def digest_or_none(scan: ScanState, relative: str) -> str | None:
    try:
        return scan.index.digest(scan.site_dir / relative, relative)
    except OSError:
        return None


def digest_file(scan: ScanState, site_dir: Path, relative: str) -> None:
    """Hash a file into ``scan.digests``, or settle it as rejected without reading it further."""
    if (
        scan.spec.key == "path"
        and relative not in scan.table.labels
        and relative not in scan.table.invalid
    ):
        scan.records[relative] = FileRecord.rejected(
            relative, Reason.LABEL_MISSING, "No row for this file in the labels CSV."
        )
        return
    try:
        digest = scan.index.digest(os.path.join(site_dir, relative), relative)  # no Path: 100k
    except OSError as exc:
        scan.records[relative] = FileRecord.rejected(
            relative, Reason.UNREADABLE, f"The file cannot be read ({exc.strerror})."
        )
        return
    if digest in scan.seen:
        scan.records[relative] = FileRecord.rejected(
            relative, Reason.DUPLICATE_INSTANCE, "Byte-identical to another file of the site."
        )
        return
    scan.digests[relative] = digest
    scan.seen.add(digest)


def settled_or_job(scan: ScanState, relative: str) -> tuple[str, Path] | None:
    """Settle a hashed file from the previous store generation or the decode cache when they can;
    otherwise return its decode job."""
    reused = scan.previous.take(scan.digests[relative]) if scan.previous else None
    if reused is not None and scan.cache is not None:
        frames = len(reused.frames)
        scan.images[relative] = Held(reused.header, frames, reused.frames)
        scan.records[relative] = FileRecord.accepted(relative, reused.header, frames, True)
        scan.cache.stats.reused += 1
        return None
    entry = scan.cache.get(scan.digests[relative]) if scan.cache else None
    if entry is None:
        return relative, scan.site_dir / relative
    keep_outcome(scan, relative, entry, written=True)
    return None


def preprocessed(outcome: Decoded | Rejected, size: int) -> CachedImage | CachedRejection:
    if isinstance(outcome, Rejected):
        return CachedRejection(outcome.reason, str(outcome))
    return CachedImage(resize_frames(outcome.frames, size), outcome.header)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """F×C×H×W → F×C×size×size by area averaging (anti-aliased downsampling)."""
    import torch  # only on a cache miss: ingestion stays torch-free when the cache answers
    from monai.transforms import Resize  # MONAI's import costs ~1.5 s per process

    resize = Resize((size, size), mode="area")
    with torch.no_grad():
        resized = [torch.as_tensor(resize(torch.from_numpy(frame))).numpy() for frame in frames]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)


def keep_outcome(
    scan: ScanState, relative: str, entry: CachedImage | CachedRejection, *, written: bool
) -> None:
    """Record a file's outcome; ``written``: it came from the cache (else it is put there). An
    image's pixels are kept only if the cache cannot give them back when they are collected."""
    transient = isinstance(entry, CachedRejection) and entry.reason in TRANSIENT
    if scan.cache is not None and not written and not transient:
        written = scan.cache.put(scan.digests[relative], entry)
    if isinstance(entry, CachedRejection):
        scan.records[relative] = FileRecord.rejected(
            relative, entry.reason, entry.message, from_cache=written
        )
    else:
        frames = len(entry.frames)
        scan.images[relative] = Held(entry.header, frames, None if written else entry.frames)
        scan.records[relative] = FileRecord.accepted(relative, entry.header, frames, written)
