"""``fedscan evaluate``: metrics of a checkpoint on a hospital's own data, no coordinator.

Everything stays at the site: the metrics are printed, the plots and the per-image predictions
(whose keys are file paths) are written where the hospital says. A classifier is scored at the
threshold the federation chose on its pooled validation data; a segmentation model by Dice and IoU
of the pooled masks (from overlap counts), Hausdorff-95 and its loss.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fedscan.client.calibration_maps import map_from_file, stored_map
from fedscan.client.eval_data import load_eval_data
from fedscan.client.segmentation_evaluation import evaluate_segmentation_checkpoint
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.metrics.calibration import cross_fitted_ece, recalibration
from fedscan.common.metrics.classification import binary_metrics, predict
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    auc_confidence_interval,
    expected_calibration_error,
)
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.models.registry import get_model_spec
from fedscan.common.protocol import AUC, POSITIVES
from fedscan.common.tasks import MULTICLASS, MULTILABEL


def evaluate_checkpoint(
    checkpoint: Path,
    data: str,
    *,
    split: str,
    device: str,
    labels: LabelSpec | None = None,
    cache_dir: str = "",
    plots: Path | None = None,
    predictions: Path | None = None,
    calibration: Path | None = None,
) -> dict:
    """Metrics of ``checkpoint`` on local data; ``calibration``: a map file (the
    ``local_calibration`` an earlier evaluation printed) used instead of the stored map."""
    model, meta = load_checkpoint(checkpoint)
    if meta.get("task") in (MULTICLASS, MULTILABEL):
        from fedscan.client.class_evaluation import evaluate_classes, scheme_of

        images = load_eval_data(
            data,
            split=split,
            size=int(meta["input_size"]),
            labels=labels,
            cache_dir=cache_dir,
            scheme=scheme_of(meta),
            model=meta["model"],
        )
        return evaluate_classes(
            model, meta, images, device=device, plots=plots, predictions=predictions
        )
    if get_model_spec(meta["model"]).task == "segmentation":
        if plots is not None:
            raise ConfigError(
                "--plots draws ROC and calibration curves, which a segmentation model has not; "
                "leave it out (--predictions writes each image's Dice)."
            )
        return evaluate_segmentation_checkpoint(
            model,
            meta,
            data,
            device=device,
            labels=labels,
            cache_dir=cache_dir,
            predictions=predictions,
        )
    images = load_eval_data(
        data,
        split=split,
        size=int(meta["input_size"]),
        labels=labels,
        cache_dir=cache_dir,
        model=meta["model"],
    )
    threshold = float(
        meta.get("threshold", 0.5)
    )  # chosen on the federation's pooled validation data
    scores, loss = predict(model, images, device=resolve_device(device))
    truth = images.labels.numpy()
    metrics = binary_metrics(truth, scores, threshold=threshold)
    low, high = auc_confidence_interval(
        metrics[AUC], int(truth.sum()), int(truth.size - truth.sum())
    )
    histogram = ScoreHistogram.of(scores, truth)
    applied = stored_map(meta) if calibration is None else map_from_file(calibration)
    calibrated = applied.apply(scores)
    if plots is not None:
        write_plots(plots, histogram, threshold)
    if predictions is not None:
        write_predictions(predictions, images.keys, truth, scores, calibrated)
    metrics.update(
        loss=loss,
        ece=expected_calibration_error(histogram),
        ece_calibrated=expected_calibration_error(ScoreHistogram.of(calibrated, truth)),
        ece_local_recalibration=cross_fitted_ece(scores, truth),
        auc_ci_low=low,
        auc_ci_high=high,
        n=int(metrics["n"]),
        positives=int(metrics[POSITIVES]),
    )
    return {
        **metrics,
        "threshold": threshold,
        "calibration": applied.to_json(),
        # This site's own map (all its images); ece_local_recalibration estimates it fairly.
        "local_calibration": recalibration(histogram).to_json(),
        "model": meta["model"],
    }


def write_plots(folder: Path, histogram: ScoreHistogram, threshold: float) -> None:
    """roc.png (with the operating point) and reliability.png."""
    from fedscan.common.metrics import plots

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "roc.png").write_bytes(plots.roc(histogram, {}, threshold))
    (folder / "reliability.png").write_bytes(plots.reliability(histogram))


def write_predictions(
    path: Path,
    keys: tuple[str, ...],
    labels: np.ndarray,
    scores: np.ndarray,
    calibrated: np.ndarray | None = None,
) -> None:
    """One row per image (local key, label, score and the calibrated score): the hospital's own
    audit trail; it stays local. Nine significant digits: a confident model's 1e-7 stays 1e-7."""
    calibrated = scores if calibrated is None else calibrated
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "score", "calibrated_score"])
        rows = zip(labels.tolist(), scores.tolist(), calibrated.tolist(), strict=True)
        for index, (label, score, mapped) in enumerate(rows):
            key = keys[index] if index < len(keys) else str(index)
            writer.writerow([key, label, f"{score:.9g}", f"{mapped:.9g}"])
