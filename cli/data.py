"""``fedscan data check``: what a site folder holds, before any training.

The terminal shows counts only. File paths and patient identifiers go to the
JSON report (``--report``), which stays on the site's disk.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedscan.common.decode_pool import PoolSettings
from fedscan.common.dicom import DecodeOptions
from fedscan.common.errors import DataError
from fedscan.common.ingest import IngestSettings, Samples, ingest_site
from fedscan.common.ingest_report import IngestReport
from fedscan.common.labels import LabelSpec
from fedscan.common.rejections import Reason


def check_site(site_dir: Path, labels: LabelSpec, settings: IngestSettings, *,
               masks: bool = False) -> tuple[Samples, IngestReport]:
    """Ingest the folder as a run would; ``masks``: as a segmentation run (every image needs its mask)."""
    if not site_dir.is_dir():
        raise DataError(f"{site_dir} is not a folder; give the site's data folder.")
    return ingest_site(site_dir, labels, settings, masks=masks)


def build_settings(*, size: int, frames: str, cache_dir: str, workers: int, timeout_s: float) -> IngestSettings:
    try:
        return IngestSettings(size, DecodeOptions(frames=frames), PoolSettings(workers, timeout_s), cache_dir)
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def print_report(console: Console, report: IngestReport) -> None:
    summary = report.summary()
    overview = Table(title="Site data check", show_header=False, title_justify="left")
    cache = summary["cache"]
    for name, value in (("files seen", summary["files"]), ("accepted", summary["accepted"]),
                        ("rejected", summary["rejected"]), ("samples (frames)", summary["samples"]),
                        ("labels CSV rows", summary["label_rows"]),
                        ("label rows matching no file", summary["labels_without_file"]),
                        ("hidden entries ignored", summary["ignored_hidden"]),
                        ("cache hits / decoded", f"{cache['hits']} / {cache['misses']}" if cache else "no cache"),
                        ("time", f"{summary['elapsed_s']:.1f} s")):
        overview.add_row(name, str(value))
    console.print(overview)
    if summary["rejected_by_reason"]:
        rejected = Table("reason", "files", "what to do", title="Rejected files", title_justify="left")
        for code, count in summary["rejected_by_reason"].items():
            rejected.add_row(code, str(count), Reason(code).advice)
        console.print(rejected)
    for title, key in (("Samples by label", "samples_by_label"), ("Image sizes", "image_sizes"),
                       ("Modality", "modality"), ("Manufacturer", "manufacturer"),
                       ("Transfer syntax", "transfersyntax"), ("File format", "format")):
        _print_counts(console, title, summary[key])


def _print_counts(console: Console, title: str, counts: dict[str, int], limit: int = 10) -> None:
    if not counts:
        return
    table = Table("value", "count", title=title, title_justify="left")
    for value, count in list(counts.items())[:limit]:
        table.add_row(value, str(count))
    if len(counts) > limit:
        table.add_row(f"… {len(counts) - limit} more", "")
    console.print(table)
