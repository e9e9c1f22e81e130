"""Volume ingestion: a site folder of DICOM series + labels CSV → one sample per series.

The pass: list files (:func:`~fedscan.common.ingest.walk.scan_files`), read every header
(:mod:`~fedscan.common.ingest.series.survey`), plan each series
(:func:`~fedscan.common.ingest.series.geometry.plan_series`), then for each accepted plan look up
the decode-once cache (one entry per series and settings, named by its files' hashes: a changed
slice re-assembles only its series) and on a miss decode its files in the worker pool (modality
values, time and memory limits), stack them in plan order, apply the site's intensity policy and
fit them to the model's input. Labels join by series; for segmentation each series' mask is read
against its plan. Only :class:`DataError` about the site as a whole raises past
:func:`ingest_volumes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fedscan.common.errors import DataError, Rejected
from fedscan.common.ingest.cache import CachedImage, CachedRejection, DecodeCache
from fedscan.common.ingest.decode_pool import DecodePool, PoolSettings
from fedscan.common.ingest.decoded import Decoded
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.dicom_header import DecodeLimits
from fedscan.common.ingest.labels import LabelSpec, read_label_table
from fedscan.common.ingest.rejections import TRANSIENT, Reason
from fedscan.common.ingest.samples import Samples
from fedscan.common.ingest.series.geometry import SeriesLimits, SeriesPlan, plan_series
from fedscan.common.ingest.series.intensity import IntensityPolicy
from fedscan.common.ingest.series.labelling import MaskFitter, Series, label_series, unmatched
from fedscan.common.ingest.series.report import SeriesRecord, SeriesReport
from fedscan.common.ingest.series.resample import VolumeInput, fit_image, to_canonical
from fedscan.common.ingest.series.slices import FileSlices
from fedscan.common.ingest.series.survey import (
    HeaderMemo,
    series_digest,
    series_name,
    survey,
)
from fedscan.common.ingest.walk import excluded_paths, scan_files
from fedscan.common.tasks import LabelScheme

log = logging.getLogger(__name__)
PIPELINE_VERSION = 1  # bump when assembly or fitting changes what a series entry holds


@dataclass(frozen=True)
class VolumeSettings:
    """The model's input, the site's intensity policy and limits, its decoders and cache."""

    target: VolumeInput
    intensity: str = "auto"
    limits: SeriesLimits = field(default_factory=SeriesLimits)
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    pool: PoolSettings = field(default_factory=PoolSettings)
    cache_dir: str = ""

    def key(self) -> str:
        """One name for every setting that changes a series entry's content."""
        described = {
            "version": PIPELINE_VERSION,
            "target": asdict(self.target),
            "intensity": IntensityPolicy.parse(self.intensity).__dict__,
            "decode": asdict(self.decode),
        }
        text = json.dumps(described, sort_keys=True)
        return "volumes-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def ingest_volumes(
    site_dir: Path,
    labels: LabelSpec,
    settings: VolumeSettings,
    *,
    masks: bool = False,
    scheme: LabelScheme | None = None,
) -> tuple[Samples, SeriesReport]:
    """Assemble, label and validate every series of a site; see the module docstring."""
    site_dir = _checked(Path(site_dir), labels)
    started = time.monotonic()
    policy = IntensityPolicy.parse(settings.intensity)
    table = read_label_table(labels, site_dir, masks=masks, scheme=scheme)
    files, _ = scan_files(
        site_dir, exclude=excluded_paths(site_dir, labels, settings.cache_dir, table)
    )
    cache = DecodeCache(Path(settings.cache_dir), settings.key()) if settings.cache_dir else None
    memo = HeaderMemo(Path(settings.cache_dir)) if settings.cache_dir else None
    found = survey(site_dir, files, settings.decode, memo)
    series = _planned(found.series, settings.limits)
    with DecodePool(settings.pool) as pool:
        for item in series:
            if item.plan is not None:
                _fit(item, site_dir, found.digests, settings, policy, pool, cache)
    fitter = MaskFitter(site_dir, table, scheme.structures if scheme else 0, settings.target, cache)
    samples = label_series(series, table, labels, fitter if masks else None)
    report = SeriesReport(
        [item.record for item in series],
        len(files),
        found.left_out,
        table.rows,
        unmatched(table, series),
        asdict(cache.stats) if cache else None,
        round(time.monotonic() - started, 3),
    )
    log.info("Ingested %s series: %s accepted", len(series), report.accepted)
    return samples, report


def _checked(site_dir: Path, labels: LabelSpec) -> Path:
    """The site folder, when it is one and its labels can key series; DataError otherwise."""
    if not site_dir.is_dir():
        raise DataError("The site data folder does not exist or is not a folder; check data-dir.")
    if labels.key == "SOPInstanceUID":
        raise DataError(
            "Volumes are labelled per series: set key to path (the series' folder), "
            "SeriesInstanceUID, StudyInstanceUID, AccessionNumber or PatientID."
        )
    return site_dir


def _planned(groups: dict[str, list[FileSlices]], limits: SeriesLimits) -> list[Series]:
    """A record per series, its plan or its rejection; ordered by name."""
    folders = Counter(series_name(members, 0, False) for members in groups.values())
    named: list[Series] = []
    counters: Counter[str] = Counter()
    for members in sorted(groups.values(), key=lambda m: series_name(m, 0, False)):
        base = series_name(members, 0, False)
        shared = folders[base] > 1
        name = series_name(members, counters[base], shared)
        counters[base] += 1
        slices = [s for member in members for s in member.slices]
        facts = {k: members[0].identity[k] for k in ("Modality", "Manufacturer")}
        record = SeriesRecord(name, "accepted", files=len(members), slices=len(slices), facts=facts)
        item = Series(record, members, base)
        try:
            item.plan = plan_series(slices, limits)
            item.record = _with_geometry(record, item.plan)
        except Rejected as rejected:
            item.record = record.reject(rejected.reason, str(rejected))
        named.append(item)
    return named


def _with_geometry(record: SeriesRecord, plan: SeriesPlan) -> SeriesRecord:
    from dataclasses import replace

    spacing = tuple(round(v, 3) for v in plan.canonical_spacing())
    return replace(record, spacing=spacing, orientation=plan.orientation)  # type: ignore[arg-type]


def _fit(
    item: Series,
    site_dir: Path,
    digests: dict[str, str],
    settings: VolumeSettings,
    policy: IntensityPolicy,
    pool: DecodePool,
    cache: DecodeCache | None,
) -> None:
    """The series' fitted volume from the cache, or decoded, assembled and fitted (and cached)."""
    from dataclasses import replace

    assert item.plan is not None
    digest = item.digest = series_digest(item.members, digests)
    entry = cache.get(digest) if cache else None
    if entry is None:
        entry = _assemble(item, site_dir, settings, policy, pool)
        if cache and not (isinstance(entry, CachedRejection) and entry.reason in TRANSIENT):
            cache.put(digest, entry)
    else:
        item.record = replace(item.record, from_cache=True)
    if isinstance(entry, CachedRejection):
        item.record = item.record.reject(entry.reason, entry.message)
        item.plan = None
    else:
        item.volume = entry.frames[0]


def _assemble(
    item: Series,
    site_dir: Path,
    settings: VolumeSettings,
    policy: IntensityPolicy,
    pool: DecodePool,
) -> CachedImage | CachedRejection:
    assert item.plan is not None
    values = assemble_values(item.plan, site_dir, pool, settings.decode)
    if isinstance(values, CachedRejection):
        return values
    modality = item.record.facts.get("Modality", "")
    unit = policy.apply(to_canonical(values, item.plan), modality)
    fitted = fit_image(unit, item.plan.canonical_spacing(), settings.target)
    return CachedImage(fitted[None], {"Modality": modality})


def assemble_values(
    plan: SeriesPlan, site_dir: Path, pool: DecodePool, limits: DecodeLimits
) -> np.ndarray | CachedRejection:
    """The series' modality values (HU for CT), slices × rows × columns in plan order: each file
    decoded once in the pool, each frame put where the plan orders it."""
    options = DecodeOptions(frames="all", limits=limits, values="modality")
    files = sorted({s.file for s in plan.slices})
    decoded: dict[str, np.ndarray] = {}
    for relative, outcome in pool.decode([(f, site_dir / f) for f in files], options):
        if isinstance(outcome, Rejected):
            return CachedRejection(outcome.reason, f"A slice of the series: {outcome}")
        decoded[relative] = _frames(outcome)
    volume = np.empty(plan.shape, np.float32)  # within SeriesLimits.max_voxels: plan_series checked
    for index, plane in enumerate(plan.slices):
        frames = decoded[plane.file]
        if plane.frame >= len(frames) or frames[plane.frame].shape != plan.shape[1:]:
            return CachedRejection(
                Reason.PIXEL_LENGTH_MISMATCH, "A slice's pixels do not match its header's size."
            )
        volume[index] = frames[plane.frame]
    return volume


def _frames(outcome: Decoded) -> np.ndarray:
    return outcome.frames[:, 0]  # F×1×H×W modality values → F×H×W
