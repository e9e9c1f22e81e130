"""``fedscan evaluate`` for a segmentation checkpoint: Dice, IoU and Hausdorff-95 on a site folder."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedscan.common.data import ImageSet, load_site
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.labels import LabelSpec
from fedscan.common.segmentation import OverlapCounts, predict_masks, score_masks


def load_masked_folder(data: str, *, size: int, labels: LabelSpec | None, cache_dir: str) -> ImageSet:
    """Every accepted image of a ``dicom:DIR`` site folder, with its mask."""
    kind, _, path_text = data.partition(":")
    if kind != "dicom" or not path_text:
        raise ConfigError(f"A segmentation checkpoint is evaluated on a site folder with masks: use "
                          f"--data dicom:DIR (got {data!r}).")
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise DataError(f"--data folder does not exist: {path_text}")
    return load_site(path, size=size, labels=labels, cache_dir=cache_dir, val_fraction=0.0, masks=True).train


def evaluate_segmentation_checkpoint(model: nn.Module, meta: dict[str, Any], data: str, *, device: str,
                                     labels: LabelSpec | None, cache_dir: str,
                                     predictions: Path | None) -> dict[str, Any]:
    """Pooled Dice and IoU over the folder's images (from overlap counts), mean Hausdorff-95, loss."""
    images = load_masked_folder(data, size=int(meta["input_size"]), labels=labels, cache_dir=cache_dir)
    probabilities, loss = predict_masks(model, images, device=resolve_device(device))
    metrics, counts = score_masks(probabilities >= 0.5, images.masks.numpy() >= 0.5, loss=loss)
    if predictions is not None:
        write_overlaps(predictions, images, probabilities >= 0.5)
    return {**metrics, "n": len(images), "with_finding": int(images.labels.sum()),
            **{key.removeprefix("seg-"): value for key, value in counts.to_metrics().items()},
            "model": meta["model"], "task": "segmentation"}


def write_overlaps(path: Path, images: ImageSet, predicted: np.ndarray) -> None:
    """One CSV row per image: its local key, true and predicted foreground pixels, its own Dice (local only)."""
    truth = images.masks.numpy() >= 0.5
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "true_pixels", "predicted_pixels", "dice"])
        for index in range(len(images)):
            counts = OverlapCounts.of(predicted[index], truth[index])
            key = images.keys[index] if index < len(images.keys) else str(index)
            writer.writerow([key, int(counts.truth), int(counts.predicted), f"{counts.dice:.6f}"])
