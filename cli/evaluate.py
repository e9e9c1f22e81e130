"""``fedscan evaluate``: a checkpoint's metrics on the hospital's own data
(:mod:`fedscan.client.local_evaluation`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedscan.cli.console import fail
from fedscan.common.errors import FedscanError
from fedscan.common.files import json_safe
from fedscan.common.ingest.labels import LabelSpec


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="final.pt (with final.json beside it).")],
    data: Annotated[str, typer.Option(help="npz:PATH or dicom:DIR (one site folder).")],
    split: Annotated[str, typer.Option(help="npz split: train | val | test.")] = "val",
    labels: Annotated[
        str | None,
        typer.Option(
            help="Labels CSV for dicom:DIR (default: labels.csv in it).", show_default=False
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help=f"What the CSV key matches (see `data check --help`; default: {LabelSpec.key}).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    plots: Annotated[
        Path | None, typer.Option(help="Write roc.png and reliability.png into this folder.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Write one CSV row per image (key, label, score; for "
            "segmentation its pixels and Dice); local only: keys are "
            "file paths."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Use this calibration map instead of the model's (a JSON file: the "
            "local_calibration an earlier evaluation printed, fitted on this site's own images; "
            "after a scanner change the training sites' map no longer fits).",
        ),
    ] = None,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Also write explanation maps into this folder, as `fedscan explain --out` does "
            "with its default methods (overlays and index.html; local only).",
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint on local data and print metrics as JSON (Dice and IoU for
    segmentation)."""
    from fedscan.client.local_evaluation import evaluate_checkpoint
    from fedscan.common.ingest.cache import default_cache_dir

    given: dict[str, Any] = {
        name: value for name, value in (("csv", labels), ("key", key)) if value is not None
    }
    try:
        result = evaluate_checkpoint(
            checkpoint,
            data,
            split=split,
            device=device,
            labels=LabelSpec(**given),
            cache_dir=default_cache_dir(),
            plots=plots,
            predictions=predictions,
            calibration=calibration,
        )
        if explain is not None:
            result["explanations"] = str(
                _explained(checkpoint, data, split, given, device, explain)
            )
    except FedscanError as exc:
        raise fail(str(exc)) from None
    print(json.dumps(json_safe(result), indent=2))


def _explained(
    checkpoint: Path, data: str, split: str, given: dict[str, Any], device: str, out: Path
) -> Path:
    """``fedscan explain``'s work with its default methods; the index page written."""
    from fedscan.cli.explain import ExplainRequest, run_explain
    from fedscan.common.explain import ExplainSettings

    request = ExplainRequest(checkpoint, data, out, split, LabelSpec(**given), device)
    written, _, _ = run_explain(request, ExplainSettings.parse("gradcam,occlusion"))
    return written.index
