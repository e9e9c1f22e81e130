"""``fedscan evaluate`` of a multiclass or multilabel checkpoint on a hospital's own data.

Everything stays at the site. The figures are those the federation pools (``common/metrics/
classwise.py``), computed here on every image of the hospital's folder or npz split: per-class AUC
with its interval, macro and micro AUC, each finding at the threshold stored with the model
(multilabel), top-1 and balanced accuracy and the confusion matrix (multiclass). ``--predictions``
writes one row per image with one score column per class (local keys: it never leaves the site).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.device import resolve_device
from fedscan.common.metrics.classification import predict_classes
from fedscan.common.metrics.classwise import ClassEvidence, pooled_class_metrics
from fedscan.common.tasks import MULTICLASS, LabelScheme, findings_of


def scheme_of(meta: dict[str, Any]) -> LabelScheme:
    """The task kind and classes a checkpoint was trained for (its head's order)."""
    return LabelScheme(str(meta["task"]), tuple(str(name) for name in meta["classes"]))


def evaluate_classes(
    model: nn.Module,
    meta: dict[str, Any],
    images: ImageSet,
    *,
    device: str,
    plots: Path | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """The checkpoint's per-class figures on ``images`` (labelled for its :func:`scheme_of`)."""
    scheme = scheme_of(meta)
    probabilities, loss = predict_classes(model, images, scheme, device=resolve_device(device))
    truth = images.labels.numpy()
    evidence = ClassEvidence.of(probabilities, truth, scheme)
    metrics = pooled_class_metrics(evidence, meta.get("thresholds"))
    if plots is not None:
        _write_plots(plots, evidence)
    if predictions is not None:
        _write_predictions(predictions, images.keys, truth, probabilities, scheme)
    return {**metrics, "loss": loss, "n": len(images), "model": meta["model"], "task": scheme.kind}


def _write_plots(folder: Path, evidence: ClassEvidence) -> None:
    """roc.png: one curve per class (one-vs-rest) and the micro-averaged one."""
    from fedscan.common.metrics import plots

    folder.mkdir(parents=True, exist_ok=True)
    per_class = {name: evidence.histograms[name] for name in evidence.histograms.classes}
    (folder / "roc.png").write_bytes(plots.roc(evidence.histograms.total(), per_class, 0.5))


def _write_predictions(
    path: Path,
    keys: tuple[str, ...],
    truth: np.ndarray,
    probabilities: np.ndarray,
    scheme: LabelScheme,
) -> None:
    """One row per image: local key, true class (or findings, |-separated), a score per class."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "truth", *(f"score:{name}" for name in scheme.classes)])
        for index, (label, row) in enumerate(zip(truth.tolist(), probabilities, strict=True)):
            named = (
                scheme.classes[label]
                if scheme.kind == MULTICLASS
                else "|".join(findings_of(label, scheme.classes))
            )
            key = keys[index] if index < len(keys) else str(index)
            writer.writerow([key, named, *(f"{score:.6f}" for score in row)])
