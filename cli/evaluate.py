"""``fedscan evaluate``: metrics of a checkpoint on a hospital's own data, no coordinator."""

from __future__ import annotations

from pathlib import Path

import torch

from fedscan.common.checkpoint import load_checkpoint
from fedscan.common.data import ImageSet, load_npz_split, load_site, preprocess
from fedscan.common.labels import LabelSpec
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.metrics import binary_metrics, predict
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
        return ImageSet(preprocess(list(images), size), torch.as_tensor(labels))
    site = load_site(path, size=size, labels=labels, cache_dir=cache_dir, val_fraction=0.0)
    return site.train  # every accepted image of the folder


def evaluate_checkpoint(checkpoint: Path, data: str, *, split: str, device: str,
                        labels: LabelSpec | None = None, cache_dir: str = "") -> dict:
    model, meta = load_checkpoint(checkpoint)
    images = load_eval_data(data, split=split, size=int(meta["input_size"]), labels=labels, cache_dir=cache_dir)
    threshold = float(meta.get("threshold", 0.5))  # chosen on the federation's pooled validation data
    scores, loss = predict(model, images, device=resolve_device(device))
    labels = images.labels.numpy()
    metrics = binary_metrics(labels, scores, threshold=threshold)
    low, high = auc_confidence_interval(metrics["auc"], int(labels.sum()), int(labels.size - labels.sum()))
    metrics.update(loss=loss, ece=expected_calibration_error(ScoreHistogram.of(scores, labels)),
                   auc_ci_low=low, auc_ci_high=high, n=int(metrics["n"]), positives=int(metrics["positives"]))
    return {**metrics, "threshold": threshold, "model": meta["model"]}
