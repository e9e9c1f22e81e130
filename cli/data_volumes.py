"""``fedscan data check --volumes``: a site's DICOM series as a 3-D model's run would see them.

Counts and geometry summaries only on the terminal; the per-series JSON report (``--report``)
holds local names and stays on the site's disk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from fedscan.cli.console import print_table
from fedscan.common.ingest.labels import LabelSpec

if TYPE_CHECKING:
    from fedscan.common.ingest.series.report import SeriesReport
    from fedscan.common.tasks import LabelScheme


def check_volumes(
    site_dir: Path,
    labels: LabelSpec,
    *,
    model: str,
    cache_dir: str,
    workers: int | None,
    timeout_s: float | None,
    masks: bool,
    scheme: LabelScheme,
) -> SeriesReport:
    """Assemble every series of the folder at ``model``'s input (a 3-D model; cnn3d's when a 2-D
    model is named), as a run would."""
    from fedscan.common.data.sources import FolderSource, volume_input
    from fedscan.common.errors import DataError
    from fedscan.common.ingest.series.assemble import ingest_volumes
    from fedscan.common.models.registry import get_model_spec

    if not site_dir.is_dir():
        raise DataError(f"{site_dir} is not a folder; give the site's data folder.")
    spec = get_model_spec(model)
    target = volume_input(spec if spec.volumetric else get_model_spec("cnn3d"))
    assert target is not None
    source = FolderSource("check", str(site_dir), labels, cache_dir=cache_dir)
    if workers is not None:
        source = replace(source, workers=workers)
    if timeout_s is not None:
        source = replace(source, decode_timeout_s=timeout_s)
    return ingest_volumes(
        site_dir, labels, source.volume_settings(target), masks=masks, scheme=scheme
    )[1]


def print_volume_report(console: Console, report: SeriesReport) -> None:
    """Series found / accepted / rejected by reason, slices per series, spacing, orientation."""
    summary = report.summary()
    overview = Table(title="Site data check (volumes)", show_header=False, title_justify="left")
    cache = summary["cache"]
    slices = summary["slices_per_series"]
    for name, value in (
        ("files seen", summary["files"]),
        ("series found", summary["series"]),
        ("series accepted", summary["accepted"]),
        ("series rejected", summary["rejected"]),
        ("files in no series", sum(summary["files_outside_series"].values())),
        (
            "slices per series (min / median / max)",
            f"{slices['min']} / {slices['median']} / {slices['max']}" if slices else "—",
        ),
        ("labels CSV rows", summary["label_rows"]),
        ("label rows matching no series", summary["labels_without_series"]),
        ("cache hits / assembled", f"{cache['hits']} / {cache['misses']}" if cache else "no cache"),
        ("time", f"{summary['elapsed_s']:.1f} s"),
    ):
        overview.add_row(name, str(value))
    print_table(overview, console)
    _print_tables(console, summary)


def _print_tables(console: Console, summary: dict) -> None:
    from fedscan.common.ingest import Reason

    for title, unit, key in (
        ("Rejected series", "series", "rejected_by_reason"),
        ("Files that joined no series", "files", "files_outside_series"),
    ):
        if summary[key]:
            table = Table("reason", unit, "what to do", title=title, title_justify="left")
            for code, count in summary[key].items():
                table.add_row(code, str(count), Reason(code).advice)
            print_table(table, console)
    for title, key in (
        ("Series by label", "samples_by_label"),
        ("Voxel spacing z × y × x (mm)", "spacing_mm"),
        ("Orientation", "orientation"),
        ("Modality", "modality"),
        ("Manufacturer", "manufacturer"),
    ):
        counts = summary[key]
        if counts:
            table = Table("value", "series", title=title, title_justify="left")
            for value, count in list(counts.items())[:10]:
                table.add_row(value, str(count))
            print_table(table, console)


def run_volume_check(
    folder: Path,
    spec: LabelSpec,
    model: str,
    cache_dir: str,
    pool: tuple[int | None, float | None],
    task: str,
    scheme: LabelScheme,
    report: Path | None,
) -> None:
    """The volume check the command prints; exit 1 when not one series is usable."""
    from fedscan.cli.console import EXIT_FAILED, console, fail

    found = check_volumes(
        folder,
        spec,
        model=model,
        cache_dir=cache_dir,
        workers=pool[0],
        timeout_s=pool[1],
        masks=task == "segmentation",
        scheme=scheme,
    )
    print_volume_report(console, found)
    if report is not None:
        report.write_text(found.to_json(), encoding="utf-8")
        console.print(f"Per-series report (local only, holds paths): {report}", highlight=False)
    if found.accepted == 0:
        reasons = found.rejected_by_reason() or "the folder holds no files"
        raise fail(
            f"No usable series in {folder}: 0 of {len(found.series)} series accepted ({reasons}).",
            EXIT_FAILED,
        )
