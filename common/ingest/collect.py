"""The working state of one site ingestion (:mod:`fedscan.common.ingest.scan`) and its last stage:
joining each decoded image with its label (and mask), in path order, and writing the accepted
frames through the store's writer.

Invariants: files are collected in path order, so a store's frames are in the order a cold load
writes them; each accepted file's pixels are held in memory only while it is written (read back
from the decode cache, or a view into the previous store generation); a file whose label, mask or
SOP Instance UID is unusable is rejected with its code, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.cache import CachedImage, DecodeCache
from fedscan.common.ingest.index import SiteIndex
from fedscan.common.ingest.labels import LabelSpec, LabelTable
from fedscan.common.ingest.masks import load_mask
from fedscan.common.ingest.pack_reuse import Previous, Sources
from fedscan.common.ingest.pack_writer import PackWriter
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.report import FileRecord
from fedscan.common.ingest.samples import Samples


@dataclass
class ScanState:
    """Working state of one ingestion."""

    table: LabelTable
    spec: LabelSpec
    site_dir: Path
    size: int
    with_masks: bool = False  # segmentation: every image needs its mask
    structures: int = 0  # a label map's K (masks hold 0..K); 0: binary masks
    index: SiteIndex = field(default_factory=lambda: SiteIndex(None))
    records: dict[str, FileRecord] = field(default_factory=dict)
    images: dict[str, Held] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    cache: DecodeCache | None = None
    previous: Previous | None = None  # a rebuild's source of unchanged frames
    sources: Sources = field(default_factory=Sources)  # where the new generation put them


@dataclass(frozen=True)
class Held:
    """An accepted file between reading and collecting: its header and frame count, and its
    pixels only where the decode cache cannot give them back (no cache, or its write failed) or
    the previous store generation holds them (a view into its memory map)."""

    header: dict
    frames: int
    pixels: np.ndarray | None = None


@dataclass
class _Collected:
    """The accepted samples so far, one entry per frame; pixels go straight to the writer."""

    writer: PackWriter
    labels: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)

    def add(self, relative: str, pixels: np.ndarray, label: int, group: str) -> None:
        frames = len(pixels)
        self.writer.append("images", pixels)
        self.labels.extend([label] * frames)
        self.groups.extend([group] * frames)
        self.keys.extend([relative] if frames == 1 else [f"{relative}#{i}" for i in range(frames)])

    def samples(self, with_masks: bool, size: int) -> tuple[Samples, dict]:
        empty = {"images": (0, 1, 1, 1), **({"masks": (0, 1, size, size)} if with_masks else {})}
        arrays, written = self.writer.finish(empty)
        labels = np.asarray(self.labels, dtype=np.int64)
        samples = Samples(arrays["images"], labels, tuple(self.groups), tuple(self.keys))
        return replace(samples, masks=arrays.get("masks")), written


def label_and_collect(
    scan: ScanState, files: list[str], writer: PackWriter
) -> tuple[Samples, dict]:
    """Join decoded images with their labels, in path order; reject unlabeled and duplicate ones.
    Each accepted file's pixels are read back from the cache here, one file at a time."""
    collected = _Collected(writer)
    for relative in files:
        image = scan.images.get(relative)
        if image is None:
            continue
        key = relative if scan.spec.key == "path" else str(image.header.get(scan.spec.key, ""))
        problem = label_problem(scan.table, key, image.header, collected.instances)
        mask = None
        if problem is None and scan.with_masks:
            mask, problem = _mask_of(scan, key, image)
        pixels = _pixels(scan, relative, image) if problem is None else None
        if problem is None and pixels is None:
            problem = Reason.UNREADABLE, "Its cache entry changed during the load; load again."
        if problem is not None:
            scan.records[relative] = scan.records[relative].reject(*problem)
            continue
        assert pixels is not None  # no problem: the pixels were read
        collected.instances.add(image.header.get("SOPInstanceUID") or relative)
        label = scan.table.labels[key] if mask is None else int(mask.any())
        if mask is not None:
            writer.append("masks", mask)
        scan.records[relative].label = label
        group = scan.table.patients.get(key) or image.header.get("PatientID") or f"file:{relative}"
        digest = scan.digests[relative]
        scan.sources.add(digest, len(collected.labels), len(pixels), image.header)
        collected.add(relative, pixels, label, group)
    return collected.samples(scan.with_masks, scan.size)


def _pixels(scan: ScanState, relative: str, image: Held) -> np.ndarray | None:
    """The file's frames: held, or read back from the cache (None if its entry went bad)."""
    if image.pixels is not None or scan.cache is None:
        return image.pixels
    entry = scan.cache.get(scan.digests[relative], count=False)
    return entry.frames if isinstance(entry, CachedImage) else None


def _mask_of(
    scan: ScanState, key: str, image: Held
) -> tuple[np.ndarray | None, tuple[Reason, str] | None]:
    """(F×1×S×S mask, None) or (None, the rejection) for an image of a segmentation site."""
    if key not in scan.table.masks:
        return None, (Reason.MASK_MISSING, "The labels CSV names no mask for this image.")
    try:
        return load_mask(
            scan.site_dir / scan.table.masks[key],
            rows=int(image.header.get("Rows", 0)),
            columns=int(image.header.get("Columns", 0)),
            frames=image.frames,
            size=scan.size,
            structures=scan.structures,
        ), None
    except Rejected as rejected:
        return None, (rejected.reason, str(rejected))


def label_problem(
    table: LabelTable, key: str, header: dict, instances: set
) -> tuple[Reason, str] | None:
    """Why the row keyed ``key`` cannot label a sample (None: it can); ``header`` and
    ``instances`` catch a second file with the same SOP Instance UID."""
    if header.get("SOPInstanceUID") and header["SOPInstanceUID"] in instances:
        return Reason.DUPLICATE_INSTANCE, "Another file holds the same SOP Instance UID."
    if key in table.unknown:
        return Reason.LABEL_UNKNOWN_CLASS, f"The label is unusable ({table.invalid[key]})."
    if key in table.invalid:
        return Reason.LABEL_INVALID, f"The label for this image is unusable ({table.invalid[key]})."
    if not key or key not in table.labels:
        return Reason.LABEL_MISSING, "No row in the labels CSV matches this image's key."
    return None
