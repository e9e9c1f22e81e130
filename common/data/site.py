"""A site folder as tensors: ingested (:mod:`fedscan.common.ingest`), split by patient.

Folders go through ingestion (decode-once cache, coded rejections); the split keeps every patient
on one side, stratified by label, and is stable as patients are added.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedscan.common import defaults
from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest.decode_pool import PoolSettings
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.scan import IngestSettings, Samples, ingest_site
from fedscan.common.tasks import LabelScheme

if TYPE_CHECKING:
    from fedscan.common.ingest.series.assemble import VolumeSettings

log = logging.getLogger(__name__)


def load_site(
    site_dir: Path,
    *,
    size: int,
    labels: LabelSpec | None = None,
    decode: DecodeOptions | None = None,
    pool: PoolSettings | None = None,
    cache_dir: str = "",
    val_fraction: float = defaults.VAL_FRACTION,
    seed: int = 0,
    masks: bool = False,
    scheme: LabelScheme | None = None,
) -> SiteData:
    """Ingest a site folder (see :mod:`fedscan.common.ingest.scan`) and split it by patient;
    ``masks``: segmentation, every image with its mask.

    Raises :class:`DataError` when not one file is usable; the message holds counts only.
    """
    settings = IngestSettings(size, decode or DecodeOptions(), pool or PoolSettings(), cache_dir)
    samples, report = ingest_site(
        Path(site_dir), labels or LabelSpec(), settings, masks=masks, scheme=scheme
    )
    if report.rejected:
        log.warning(
            "Rejected %s of %s files: %s",
            report.rejected,
            len(report.records),
            report.rejected_by_reason(),
        )
    if len(samples.labels) == 0:
        raise DataError(
            f"No usable image at this site: 0 of {len(report.records)} files accepted "
            f"(rejected: {report.rejected_by_reason() or 'none found'}). Run "
            "`fedscan data check` on the site folder for the reasons."
        )
    return _split(samples, val_fraction, seed, report.rejected_by_reason())


def load_volume_site(
    site_dir: Path,
    settings: VolumeSettings,
    *,
    labels: LabelSpec | None = None,
    val_fraction: float = defaults.VAL_FRACTION,
    seed: int = 0,
    masks: bool = False,
    scheme: LabelScheme | None = None,
) -> SiteData:
    """Assemble a site's DICOM series into volumes (see
    :mod:`fedscan.common.ingest.series.assemble`), one sample per series, split by patient.

    Raises :class:`DataError` when not one series is usable; the message holds counts only.
    """
    from fedscan.common.ingest.series.assemble import ingest_volumes

    samples, report = ingest_volumes(
        Path(site_dir), labels or LabelSpec(), settings, masks=masks, scheme=scheme
    )
    rejected = report.rejected_by_reason()
    if rejected:
        log.warning("Left out %s series or files: %s", sum(rejected.values()), rejected)
    if len(samples.labels) == 0:
        raise DataError(
            f"No usable series at this site: 0 of {len(report.series)} series accepted from "
            f"{report.files} files (rejected: {rejected or 'none found'}). Run `fedscan data "
            "check --volumes` on the site folder for the reasons."
        )
    return _split(samples, val_fraction, seed, rejected)


def _split(samples: Samples, val_fraction: float, seed: int, rejected: dict[str, int]) -> SiteData:
    train_idx, val_idx = patient_split(samples.labels, samples.groups, val_fraction, seed)
    return SiteData(
        train=_subset(samples, train_idx), val=_subset(samples, val_idx), rejected=rejected
    )


def _subset(samples: Samples, indices: np.ndarray) -> ImageSet:
    masks = None if samples.masks is None else torch.from_numpy(samples.masks[indices])
    return ImageSet(
        torch.from_numpy(samples.images[indices]),
        torch.from_numpy(samples.labels[indices]),
        tuple(samples.keys[i] for i in indices),
        masks,
    )


def patient_split(
    labels: np.ndarray, groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) indices with no patient on both sides.

    Patients are stratified by their highest label and ordered by a seeded hash
    of their identifier, so adding new patients later leaves existing ones on
    their side. With at least two patients in a class, each side gets one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError("val_fraction must be in [0, 1).")
    patient_label: dict[str, int] = {}
    for group, label in zip(groups, labels.tolist(), strict=True):
        patient_label[group] = max(label, patient_label.get(group, 0))
    val_groups: set[str] = set()
    for label in sorted(set(patient_label.values())):
        members = sorted(
            (g for g, lab in patient_label.items() if lab == label),
            key=lambda group: _patient_rank(seed, group),
        )
        cut = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            cut = min(max(cut, 1), len(members) - 1)
        val_groups.update(members[:cut])
    in_val = np.array([group in val_groups for group in groups], dtype=bool)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def _patient_rank(seed: int, group: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
