"""Volume ingestion's second half: each fitted series joined with its label and, for
segmentation, its mask (read against the series' plan, fitted like its image, cached).

Invariant: a series without a usable label or mask is rejected with one code and leaves no
sample; samples, labels, groups and keys describe the same series in the same order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.cache import CachedImage, DecodeCache, content_hash
from fedscan.common.ingest.collect import label_problem
from fedscan.common.ingest.labels import LabelSpec, LabelTable
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.samples import Samples
from fedscan.common.ingest.series.geometry import SeriesPlan
from fedscan.common.ingest.series.report import SeriesRecord
from fedscan.common.ingest.series.resample import VolumeInput, fit_labels, to_canonical
from fedscan.common.ingest.series.slices import FileSlices
from fedscan.common.ingest.series.volume_masks import load_volume_mask


@dataclass
class Series:
    """One series on its way through volume ingestion."""

    record: SeriesRecord
    members: list[FileSlices]
    base: str  # its folder, or its file (what a path key matches)
    plan: SeriesPlan | None = None
    volume: np.ndarray | None = None  # 1×D×S×S once fitted
    digest: str = ""  # its files' content name (series_digest)


def _key_of(item: Series, spec: LabelSpec) -> str:
    if spec.key == "path":
        return item.base
    return item.members[0].identity.get(spec.key, "")


def label_series(
    series: list[Series], table: LabelTable, spec: LabelSpec, masks: MaskFitter | None
) -> Samples:
    """Join each fitted series with its label (and mask); reject the rest with a code."""
    images, labels, groups, keys, fitted_masks = [], [], [], [], []
    for item in series:
        if item.volume is None or item.plan is None:
            continue
        key = _key_of(item, spec)
        problem = label_problem(table, key, {}, set())
        mask = None
        if problem is None and masks is not None:
            mask, problem = masks.fit(item, key)
        if problem is not None:
            item.record = item.record.reject(*problem)
            continue
        label = table.labels[key] if mask is None else int(mask.any())
        item.record = replace(item.record, label=label)
        images.append(item.volume)
        labels.append(label)
        patient = item.members[0].identity.get("PatientID", "")
        groups.append(table.patients.get(key) or patient or f"series:{item.record.name}")
        keys.append(item.record.name)
        if mask is not None:
            fitted_masks.append(mask)
    return _samples(images, labels, groups, keys, fitted_masks if masks is not None else None)


def _samples(
    images: list[np.ndarray],
    labels: list[int],
    groups: list[str],
    keys: list[str],
    masks: list[np.ndarray] | None,
) -> Samples:
    stacked = np.stack(images) if images else np.zeros((0, 1, 1, 1, 1), np.float32)
    stacked_masks = None
    if masks is not None:
        stacked_masks = np.stack(masks) if masks else np.zeros((0, *stacked.shape[1:]), np.float32)
    return Samples(stacked, np.asarray(labels, np.int64), tuple(groups), tuple(keys), stacked_masks)


@dataclass(frozen=True)
class MaskFitter:
    """Each series' mask, read against its plan and fitted like its image; cached by the series'
    and the mask file's content (a warm pass reads no mask voxels)."""

    site_dir: Path
    table: LabelTable
    structures: int
    target: VolumeInput
    cache: DecodeCache | None

    def fit(self, item: Series, key: str) -> tuple[np.ndarray | None, tuple[Reason, str] | None]:
        plan = item.plan
        assert plan is not None
        if key not in self.table.masks:
            return None, (Reason.MASK_MISSING, "The labels CSV names no mask for this series.")
        path = self.site_dir / self.table.masks[key]
        name = self._name(item, path)
        entry = self.cache.get(name) if self.cache and name else None
        if isinstance(entry, CachedImage):
            return entry.frames[0], None
        try:
            values = load_volume_mask(path, plan, self.structures)
        except Rejected as rejected:
            return None, (rejected.reason, str(rejected))
        spacing = plan.canonical_spacing()
        fitted = fit_labels(to_canonical(values, plan), spacing, self.target, self.structures)
        if self.cache and name:
            self.cache.put(name, CachedImage(fitted[None], {}))
        return fitted, None

    def _name(self, item: Series, path: Path) -> str:
        try:
            mask = content_hash(path)
        except OSError:
            return ""  # unreadable: load_volume_mask says so
        text = f"mask:{item.digest}:{mask}:{self.structures}"
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def unmatched(table: LabelTable, series: list[Series]) -> int:
    matched = {item.base for item in series} | {
        value for item in series for value in item.members[0].identity.values()
    }
    return sum(1 for key in (*table.labels, *table.invalid) if key not in matched)
