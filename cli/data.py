"""``fedscan data check``: what a site folder holds, before any training.

The terminal shows counts only. File paths and patient identifiers go to the
JSON report (``--report``), which stays on the site's disk. Option defaults are
those of the site's ``[data]`` settings (:class:`~fedscan.common.ingest.labels.LabelSpec`,
:class:`~fedscan.common.data.sources.FolderSource`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedscan.cli.console import EXIT_FAILED, console, fail
from fedscan.cli.data_report import print_counts, print_report
from fedscan.common import defaults
from fedscan.common.errors import FedscanError
from fedscan.common.ingest.labels import LabelSpec

if TYPE_CHECKING:
    from fedscan.common.ingest import IngestReport, IngestSettings
    from fedscan.common.tasks import LabelScheme

data_app = typer.Typer(help="Inspect a site's data folder.", no_args_is_help=True)


@data_app.command("check")
def data_check(
    folder: Annotated[
        Path, typer.Argument(help="The site's data folder (any depth; DICOM, PNG, JPEG).")
    ],
    labels: Annotated[
        str | None,
        typer.Option(help="Labels CSV (default: labels.csv in the folder).", show_default=False),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help=f"What the CSV key matches ({LabelSpec.key} by default): path | SOPInstanceUID | "
            "StudyInstanceUID | AccessionNumber | PatientID.",
            show_default=False,
        ),
    ] = None,
    key_column: Annotated[
        str | None,
        typer.Option(
            help="CSV column holding the key (default: file / the attribute).", show_default=False
        ),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(
            help=f"CSV column holding the 0/1 label (default: {LabelSpec.label_column}).",
            show_default=False,
        ),
    ] = None,
    patient_column: Annotated[
        str | None,
        typer.Option(
            help="CSV column grouping images by patient (default: PatientID).", show_default=False
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="classification | multiclass | multilabel (with --classes) | segmentation "
            "(also check every image's mask)."
        ),
    ] = "classification",
    classes: Annotated[
        str,
        typer.Option(
            help="multiclass / multilabel: the run's class names, comma-separated, in order; "
            "rows naming any other class are rejected (LABEL_UNKNOWN_CLASS). Segmentation: a label "
            "map's structures (mask value k = the k-th); other values are rejected "
            "(MASK_UNKNOWN_LABEL)."
        ),
    ] = "",
    label_columns: Annotated[
        str | None,
        typer.Option(
            help="multilabel: the 0/1 columns, one per finding, comma-separated (default: the "
            "columns named like the findings).",
            show_default=False,
        ),
    ] = None,
    mask_column: Annotated[
        str | None,
        typer.Option(
            help=f"CSV column naming each image's mask file (segmentation; default: "
            f"{LabelSpec.mask_column}).",
            show_default=False,
        ),
    ] = None,
    frames: Annotated[
        str | None,
        typer.Option(
            help=f"Multi-frame policy: middle | all (default: {defaults.FRAMES}).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Model whose input size the cache entries are built for.")
    ] = defaults.MODEL,
    cache_dir: Annotated[
        str,
        typer.Option(help="Decode-once cache (default: $FEDSCAN_CACHE_DIR or ~/.cache/fedscan)."),
    ] = "",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Decode everything; read and write no cache.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Hash every file's bytes again, not only those whose size, times or inode "
            "changed since the last load (the site index in the cache folder).",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help=f"Decoder processes (default: {defaults.DECODE_WORKERS}).", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help=f"Per-file decode time limit, seconds (default: {defaults.DECODE_TIMEOUT_S:g}).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the per-file JSON report here (local: holds paths).")
    ] = None,
    volumes: Annotated[
        bool,
        typer.Option(
            "--volumes",
            help="Check CT/MR series as a 3-D model's run assembles them (implied by a 3-D "
            "--model): series accepted or rejected by reason, slices, spacing, orientation.",
        ),
    ] = False,
) -> None:
    """Check a site folder: every file accepted or rejected with a reason, and what was found."""
    from fedscan.common.ingest.cache import default_cache_dir
    from fedscan.common.models.registry import get_model_spec

    try:
        if task not in defaults.TASKS:
            raise FedscanError(f"Unknown --task {task!r}; use one of {', '.join(defaults.TASKS)}.")
        spec = LabelSpec(
            **_given(
                csv=labels,
                key=key,
                key_column=key_column,
                label_column=label_column,
                patient_column=patient_column,
                mask_column=mask_column,
                label_columns=_names(label_columns),
            )
        )
        scheme = _scheme(task, classes)
        if volumes or get_model_spec(model).volumetric:
            from fedscan.cli.data_volumes import run_volume_check

            cache = "" if no_cache else (cache_dir or default_cache_dir())
            run_volume_check(folder, spec, model, cache, (workers, timeout), task, scheme, report)
            return
        settings = build_settings(
            size=get_model_spec(model).input_size,
            frames=frames,
            cache_dir="" if no_cache else (cache_dir or default_cache_dir()),
            workers=workers,
            timeout_s=timeout,
            verify=verify,
        )
        found = check_site(folder, spec, settings, masks=task == "segmentation", scheme=scheme)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    per_class = scheme.kind in ("multiclass", "multilabel")
    print_report(console, found, by_label=not per_class)
    if per_class:
        print_counts(console, "Samples by class", class_counts(found, scheme))
    if report is not None:
        report.write_text(found.to_json(), encoding="utf-8")
        console.print(f"Per-file report (local only, holds paths): {report}", highlight=False)
    if found.accepted == 0:
        reasons = found.rejected_by_reason() or "the folder holds no files"
        raise fail(
            f"No usable image in {folder}: 0 of {len(found.records)} files accepted ({reasons}).",
            EXIT_FAILED,
        )


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set (the settings' own defaults fill in the rest)."""
    return {name: value for name, value in options.items() if value is not None}


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _scheme(task: str, classes: str) -> LabelScheme:
    """The labels the check reads (segmentation: the label map's structures, if any);
    ConfigError for a bad class list."""
    from fedscan.common.tasks import LabelScheme

    return LabelScheme(task, _names(classes) or ())


def class_counts(report: IngestReport, scheme: LabelScheme) -> dict[str, int]:
    """Accepted samples per class (multilabel: per finding); a class with none shows 0."""
    labels = [
        record.label
        for record in report.records
        if record.label is not None
        for _ in range(record.samples)
    ]
    return scheme.counts(labels)


def check_site(
    site_dir: Path,
    labels: LabelSpec,
    settings: IngestSettings,
    *,
    masks: bool = False,
    scheme: LabelScheme | None = None,
) -> IngestReport:
    """Ingest the folder as a run would; ``masks``: as a segmentation run (every image needs its
    mask)."""
    from fedscan.common.errors import DataError
    from fedscan.common.ingest import ingest_site

    if not site_dir.is_dir():
        raise DataError(f"{site_dir} is not a folder; give the site's data folder.")
    return ingest_site(site_dir, labels, settings, masks=masks, scheme=scheme)[1]


def build_settings(
    *,
    size: int,
    frames: str | None,
    cache_dir: str,
    workers: int | None,
    timeout_s: float | None,
    verify: bool = False,
) -> IngestSettings:
    from fedscan.common.errors import DataError
    from fedscan.common.ingest import DecodeOptions, IngestSettings, PoolSettings

    try:
        return IngestSettings(
            size,
            DecodeOptions(**_given(frames=frames)),
            PoolSettings(**_given(workers=workers, timeout_s=timeout_s)),
            cache_dir,
            verify,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from exc
