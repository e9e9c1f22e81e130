"""``fedscan evaluate``: metrics of a checkpoint on a hospital's own data, no coordinator."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

import torch

from fedscan.common.checkpoint import load_checkpoint
from fedscan.common.data import ImageSet, load_npz_split, load_site, preprocess
from fedscan.common.labels import LabelSpec
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.metrics import binary_metrics, predict
from fedscan.common.models import get_model_spec
from fedscan.common.pooled import ScoreHistogram, auc_confidence_interval, expected_calibration_error


def load_eval_data(data: str, *, split: str, size: int, labels: LabelSpec | None = None,
                   cache_dir: str = "") -> ImageSet:
    kind, _, path_text = data.partition(":")
    path = Path(path_text).expanduser()
    if kind not in ("npz", "dicom") or not path_text:
        raise ConfigError(f"Unknown --data {data!r}; use npz:PATH or dicom:DIR.")
    if not path.exists():
        raise DataError(f"--data path does not exist: {path_text}")
    if kind == "npz":
        images, labels = load_npz_split(path, split)
        return ImageSet(preprocess(list(images), size), torch.as_tensor(labels),
                        tuple(f"{split}:{index}" for index in range(len(labels))))
    site = load_site(path, size=size, labels=labels, cache_dir=cache_dir, val_fraction=0.0)
    return site.train  # every accepted image of the folder


def evaluate_checkpoint(checkpoint: Path, data: str, *, split: str, device: str,
                        labels: LabelSpec | None = None, cache_dir: str = "", plots: Path | None = None,
                        predictions: Path | None = None) -> dict:
    model, meta = load_checkpoint(checkpoint)
    if get_model_spec(meta["model"]).task == "segmentation":
        from fedscan.cli.evaluate_segmentation import evaluate_segmentation_checkpoint

        if plots is not None:
            raise ConfigError("--plots draws ROC and calibration curves, which a segmentation model has not; "
                              "leave it out (--predictions writes each image's Dice).")
        return evaluate_segmentation_checkpoint(model, meta, data, device=device, labels=labels,
                                                cache_dir=cache_dir, predictions=predictions)
    images = load_eval_data(data, split=split, size=int(meta["input_size"]), labels=labels, cache_dir=cache_dir)
    threshold = float(meta.get("threshold", 0.5))  # chosen on the federation's pooled validation data
    scores, loss = predict(model, images, device=resolve_device(device))
    labels = images.labels.numpy()
    metrics = binary_metrics(labels, scores, threshold=threshold)
    low, high = auc_confidence_interval(metrics["auc"], int(labels.sum()), int(labels.size - labels.sum()))
    histogram = ScoreHistogram.of(scores, labels)
    if plots is not None:
        write_plots(plots, histogram, threshold)
    if predictions is not None:
        write_predictions(predictions, images.keys, labels, scores)
    metrics.update(loss=loss, ece=expected_calibration_error(histogram),
                   auc_ci_low=low, auc_ci_high=high, n=int(metrics["n"]), positives=int(metrics["positives"]))
    return {**metrics, "threshold": threshold, "model": meta["model"]}


def write_plots(folder: Path, histogram: ScoreHistogram, threshold: float) -> None:
    """roc.png (with the operating point) and reliability.png."""
    from fedscan.server import plots

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "roc.png").write_bytes(plots.roc(histogram, {}, threshold))
    (folder / "reliability.png").write_bytes(plots.reliability(histogram))


def write_predictions(path: Path, keys: tuple[str, ...], labels: np.ndarray, scores: np.ndarray) -> None:
    """One row per image (local key, label, score): the hospital's own audit trail; it stays local."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "score"])
        for index, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
            writer.writerow([keys[index] if index < len(keys) else str(index), label, f"{score:.6f}"])
