"""Site ingestion: a folder tree of images plus a labels CSV → samples and a report.

Every file found ends *accepted* or *rejected* with a code from
:class:`~fedscan.common.ingest.rejections.Reason`; nothing raises past
:func:`ingest_site` except a :class:`DataError` about the site as a whole
(no folder, unusable CSV). Files are hashed (only those whose stat changed since the site index
last saw them; :mod:`fedscan.common.ingest.index`), looked up in the decode-once cache, and only
misses are decoded, in worker processes with a time limit.
For segmentation every accepted image also needs its mask
(:mod:`fedscan.common.ingest.masks`); files named as masks are never scanned as images.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedscan import __version__
from fedscan.common.errors import DataError
from fedscan.common.ingest import packed
from fedscan.common.ingest import quick as quick_check
from fedscan.common.ingest.cache import (
    DecodeCache,
    content_hash,
    settings_key,
)
from fedscan.common.ingest.collect import ScanState, label_and_collect
from fedscan.common.ingest.decode_pool import DecodePool, PoolSettings
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.index import SiteIndex, index_path
from fedscan.common.ingest.labels import (
    LabelSpec,
    read_label_table,
)
from fedscan.common.ingest.outcomes import (
    digest_file,
    digest_or_none,
    keep_outcome,
    preprocessed,
    settled_or_job,
)
from fedscan.common.ingest.pack_writer import PackWriter
from fedscan.common.ingest.rejections import TRANSIENT, Reason
from fedscan.common.ingest.report import IngestReport, Tally
from fedscan.common.ingest.samples import Samples
from fedscan.common.ingest.walk import excluded_paths, scan_files
from fedscan.common.tasks import LabelScheme

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    """Model input ``size``, decoding options, worker pool and cache folder ("" = no cache, no
    site index); ``verify``: re-hash every file, trusting no index entry."""

    size: int
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    pool: PoolSettings = field(default_factory=PoolSettings)
    cache_dir: str = ""
    verify: bool = False


def ingest_site(
    site_dir: Path,
    labels: LabelSpec,
    settings: IngestSettings,
    *,
    masks: bool = False,
    scheme: LabelScheme | None = None,
) -> tuple[Samples, IngestReport]:
    """Scan, decode (or read from cache), label and validate every file of a site; with ``masks``
    (segmentation) each image also needs a valid mask; ``scheme``: the run's task kind and classes
    (default binary)."""
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise DataError("The site data folder does not exist or is not a folder; check data-dir.")
    started = time.monotonic()
    cache = (
        DecodeCache(Path(settings.cache_dir), settings_key(settings.decode, settings.size))
        if settings.cache_dir
        else None
    )
    given = _Given(labels, masks, scheme.structures if scheme is not None else 0, scheme)
    quick = _quick(site_dir, settings, cache, given) if cache is not None else None
    if quick is not None and cache is not None:
        found = packed.load_quick(_store_folder(cache, site_dir), quick.key)
        if found is not None and found.tally is not None:
            return _quick_answer(found, found.tally, quick, cache, started)
    settled = quick.key if quick is not None and quick.settled else None
    return _ingest(site_dir, settings, cache, given, started, settled)


@dataclass(frozen=True)
class _Given:
    """What a load is asked for besides the folder and the settings."""

    labels: LabelSpec
    masks: bool
    structures: int
    scheme: LabelScheme | None

    def parts(self, cache: DecodeCache) -> list:
        """Everything the samples depend on that is not a file's content."""
        return [
            __version__,  # how files become samples may change with the code
            cache.key,
            asdict(self.labels),
            [self.masks, self.structures, repr(self.scheme)],
        ]


def _store_folder(cache: DecodeCache, site_dir: Path) -> Path:
    return packed.store_folder(cache.root, cache.key, site_dir)


def _quick(
    site_dir: Path, settings: IngestSettings, cache: DecodeCache, given: _Given
) -> quick_check.QuickKey | None:
    if settings.verify:
        return None
    skip = frozenset({os.path.realpath(settings.cache_dir)})
    csv = given.labels.csv_path(site_dir)
    return quick_check.quick_key(site_dir, csv, skip, given.parts(cache))


def _quick_answer(
    found: packed.Stored,
    tally: Tally,
    quick: quick_check.QuickKey,
    cache: DecodeCache,
    started: float,
) -> tuple[Samples, IngestReport]:
    """The load the packed store answered by its quick key: nothing read per file."""
    cache.stats.hash_reused, cache.stats.packed = len(found.records), 1
    report = IngestReport.stored(
        found.records, tally, quick.ignored, cache.stats, time.monotonic() - started
    )
    log.info(
        "Ingested %s files: %s accepted, %s rejected (unchanged since the last load)",
        len(found.records),
        report.accepted,
        report.rejected,
    )
    return found.samples, report


def _ingest(
    site_dir: Path,
    settings: IngestSettings,
    cache: DecodeCache | None,
    given: _Given,
    started: float,
    quick: str | None,
) -> tuple[Samples, IngestReport]:
    """The full load: every file's stat against the site index, the store by its fingerprint;
    ``quick``: the settled quick key to keep with the store (None: not settled)."""
    scan = ScanState(
        read_label_table(given.labels, site_dir, masks=given.masks, scheme=given.scheme),
        given.labels,
        site_dir,
        settings.size,
        given.masks,
        given.structures,
    )
    if cache is not None:
        where = index_path(Path(settings.cache_dir), site_dir)
        scan.index, scan.cache = SiteIndex.open(where, verify=settings.verify), cache
    excluded = excluded_paths(site_dir, given.labels, settings.cache_dir, scan.table)
    files, ignored = scan_files(site_dir, exclude=excluded)
    for relative in files:
        digest_file(scan, site_dir, relative)
    store = _store_of(scan, cache, files, given) if cache is not None else None
    answered = store.load() if store is not None else None
    written: dict = {}
    if answered is None:
        samples, written = _collect_anew(scan, files, settings, store)
    else:
        samples = answered.samples
        scan.records.update({record.path: record for record in answered.records})
        if quick is not None and answered.quick != quick and store is not None:
            store.confirm(quick)
    scan.index.save()
    if cache is not None:
        cache.stats.hashed, cache.stats.hash_reused = scan.index.hashed, scan.index.reused
        cache.stats.packed = int(answered is not None)
    report = IngestReport.build(
        [scan.records[f] for f in files],
        scan.table,
        ignored,
        cache.stats if cache else None,
        time.monotonic() - started,
    )
    # A transient rejection (a decoder timed out) is retried next load: never frozen in a store.
    transient = any(r.reason and Reason(r.reason) in TRANSIENT for r in report.records)
    if store is not None and written and not transient:
        records = list(report.records)
        tally = Tally.of(report)
        store.save(written, samples, records, sources=scan.sources, tally=tally, quick=quick)
    log.info(
        "Ingested %s files: %s accepted, %s rejected", len(files), report.accepted, report.rejected
    )
    return samples, report


def _collect_anew(
    scan: ScanState, files: list[str], settings: IngestSettings, store: packed.PackedSite | None
) -> tuple[Samples, dict]:
    """The samples from the previous store generation, the decode cache and decoding, written to
    a new store generation."""
    writer = store.writer() if store is not None else PackWriter(None, "")
    scan.previous = store.previous() if store is not None else None
    try:
        return _decode_and_collect(scan, files, settings, writer)
    except BaseException:
        writer.discard()
        raise


def _store_of(
    scan: ScanState, cache: DecodeCache, files: list[str], given: _Given
) -> packed.PackedSite:
    """The packed store, keyed by everything this load's samples depend on."""
    masks = sorted(set(scan.table.masks.values())) if scan.with_masks else []
    parts = {
        "given": given.parts(cache),
        "files": [[f, scan.digests.get(f) or scan.records[f].reason] for f in files],
        "labels": content_hash(scan.spec.csv_path(scan.site_dir)),
        "masks": {mask: digest_or_none(scan, mask) for mask in masks},
    }
    folder = _store_folder(cache, scan.site_dir)
    return packed.PackedSite(folder, packed.fingerprint(parts), scan.index.verify)


def _decode_and_collect(
    scan: ScanState, files: list[str], settings: IngestSettings, writer: PackWriter
) -> tuple[Samples, dict]:
    """The samples from the decode cache, decoding its misses (the store did not answer), written
    through ``writer`` in path order; and the written arrays' descriptions."""
    jobs = [
        job
        for relative in files
        if relative in scan.digests and (job := settled_or_job(scan, relative)) is not None
    ]
    with DecodePool(settings.pool) as pool:
        for relative, outcome in pool.decode(jobs, settings.decode):
            keep_outcome(scan, relative, preprocessed(outcome, settings.size), written=False)
    return label_and_collect(scan, files, writer)
