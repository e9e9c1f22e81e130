"""``fedscan evaluate`` of a segmentation checkpoint: Dice and IoU of the pooled masks (from
overlap counts, per structure for a label map), Hausdorff-95 and the loss, on a site folder with
masks. The per-image CSV (keys are local file paths) is written only where the hospital says and
never leaves the site.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedscan.client.eval_data import load_masked_folder
from fedscan.common.data.imageset import ImageSet
from fedscan.common.device import resolve_device
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.metrics.confusion import LabelOverlaps
from fedscan.common.metrics.segmentation import (
    OverlapCounts,
    predict_masks,
    score_label_map,
    score_masks,
)


def evaluate_segmentation_checkpoint(
    model: nn.Module,
    meta: dict[str, Any],
    data: str,
    *,
    device: str,
    labels: LabelSpec | None,
    cache_dir: str,
    predictions: Path | None,
) -> dict[str, Any]:
    """Pooled Dice and IoU over the folder's images (from overlap counts), mean Hausdorff-95,
    loss; for a label map also each structure's."""
    structures = tuple(meta.get("classes") or ())
    images = load_masked_folder(
        data,
        size=int(meta["input_size"]),
        labels=labels,
        cache_dir=cache_dir,
        structures=structures,
        model=meta["model"],
    )
    if structures:
        return _label_map_checkpoint(model, meta, images, device=device, predictions=predictions)
    probabilities, loss = predict_masks(model, images, device=resolve_device(device))
    metrics, counts = score_masks(
        probabilities >= 0.5, images.require_masks().numpy() >= 0.5, loss=loss
    )
    if predictions is not None:
        write_overlaps(predictions, images, probabilities >= 0.5)
    return {
        **metrics,
        "n": len(images),
        "with_finding": int(images.labels.sum()),
        **{key.removeprefix("seg-"): value for key, value in counts.to_metrics().items()},
        "model": meta["model"],
        "task": "segmentation",
    }


def _label_map_checkpoint(
    model: nn.Module,
    meta: dict[str, Any],
    images: ImageSet,
    *,
    device: str,
    predictions: Path | None,
) -> dict[str, Any]:
    """Mean and per-structure Dice and IoU (pooled TP, FP, FN over the folder), foreground
    Hausdorff-95 and loss of a label-map checkpoint."""
    structures = tuple(meta["classes"])
    probabilities, loss = predict_masks(
        model, images, device=resolve_device(device), structures=structures
    )
    predicted = probabilities.argmax(axis=1)  # one prediction for the figures and the table
    metrics, foreground, per_label = score_label_map(
        predicted[:, None], images, structures, loss=loss
    )
    if predictions is not None:
        write_label_overlaps(predictions, images, predicted, structures)
    return {
        **metrics,
        **per_label.metrics(structures),
        "foreground-dice": foreground.dice,
        "n": len(images),
        "with_finding": int(images.labels.sum()),
        "model": meta["model"],
        "task": "segmentation",
    }


def write_label_overlaps(
    path: Path, images: ImageSet, predicted: np.ndarray, structures: tuple[str, ...]
) -> None:
    """One CSV row per image: its local key and its own Dice of each structure (local only)."""
    truth = np.rint(images.require_masks().numpy()[:, 0]).astype(np.int64)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", *(f"dice:{name}" for name in structures)])
        for index in range(len(images)):
            found = LabelOverlaps.of(predicted[index], truth[index], labels=len(structures))
            per_label = found.metrics(structures)["labels"]
            key = images.keys[index] if index < len(images.keys) else str(index)
            writer.writerow([key, *(f"{per_label[name]['dice']:.6f}" for name in structures)])


def write_overlaps(path: Path, images: ImageSet, predicted: np.ndarray) -> None:
    """One CSV row per image: its local key, true and predicted foreground pixels, its own Dice
    (local only)."""
    truth = images.require_masks().numpy() >= 0.5
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "true_pixels", "predicted_pixels", "dice"])
        for index in range(len(images)):
            counts = OverlapCounts.of(predicted[index], truth[index])
            key = images.keys[index] if index < len(images.keys) else str(index)
            writer.writerow([key, int(counts.truth), int(counts.predicted), f"{counts.dice:.6f}"])
