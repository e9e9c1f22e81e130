"""Clinical metrics of a binary classifier: ROC-AUC, accuracy, sensitivity, specificity, F1, loss.

MONAI is not imported here: every ClientApp process would pay its ~1.5 s import for one AUC.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.metrics.ratios import safe_ratio
from fedscan.common.protocol import (
    ACCURACY,
    AUC,
    F1,
    LOSS,
    POSITIVES,
    PRECISION,
    SENSITIVITY,
    SPECIFICITY,
)
from fedscan.common.tasks import MULTICLASS, LabelScheme


def binary_metrics(
    labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5
) -> dict[str, float]:
    """Metrics of probability ``scores`` against 0/1 ``labels``.

    AUC is NaN when only one class is present (it is undefined, not 0.5);
    ratios with an empty denominator are NaN too.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    predicted = scores >= threshold
    tp = float(np.sum(predicted & (labels == 1)))
    tn = float(np.sum(~predicted & (labels == 0)))
    fp = float(np.sum(predicted & (labels == 0)))
    fn = float(np.sum(~predicted & (labels == 1)))
    both_classes = 0 < labels.sum() < labels.size
    auc = rank_auc(labels, scores) if both_classes else math.nan
    precision, recall = safe_ratio(tp, tp + fp), safe_ratio(tp, tp + fn)
    f1 = safe_ratio(2 * tp, 2 * tp + fp + fn)
    return {
        AUC: auc,
        ACCURACY: safe_ratio(tp + tn, labels.size),
        SENSITIVITY: recall,
        SPECIFICITY: safe_ratio(tn, tn + fp),
        F1: f1,
        PRECISION: precision,
        "n": float(labels.size),
        POSITIVES: float(labels.sum()),
    }


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC-AUC (Mann–Whitney U from average ranks; tied scores count one half)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = (
        np.cumsum(counts) - (counts - 1) / 2.0
    )  # 1-based mean rank of each distinct score
    ranks = average_rank[inverse]
    positives = int(labels.sum())
    negatives = labels.size - positives
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives)
    )


@torch.no_grad()
def predict(
    model: nn.Module, data: ImageSet, *, device: torch.device, batch_size: int = 256
) -> tuple[np.ndarray, float]:
    """Probabilities for every image (float64: a float32 sigmoid rounds every logit above ≈ 17 to
    exactly 1, which would tie a confident model's positives) and the mean binary cross-entropy."""
    model.to(device).eval()
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    scores, loss = [], 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        labels = data.labels[start : start + batch_size].float().to(device)
        logits = model(images)
        loss += float(criterion(logits, labels))
        scores.append(torch.sigmoid(logits.double()).cpu().numpy())
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    return all_scores, loss / max(len(data), 1)


@torch.no_grad()
def predict_classes(
    model: nn.Module,
    data: ImageSet,
    scheme: LabelScheme,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> tuple[np.ndarray, float]:
    """Class probabilities (N×K: softmax for multiclass, per-finding sigmoid for multilabel) and
    the mean training loss of the kind (``training_loss``)."""
    from fedscan.common.models.training import training_loss

    model.to(device).eval()
    criterion = training_loss("bce", kind=scheme.kind, classes=scheme.classes)
    scores, loss = [], 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        labels = data.labels[start : start + batch_size].to(device)
        logits = model(images)
        loss += float(criterion(logits, labels)) * len(images)
        logits = logits.double()  # float64 probabilities, as in predict()
        probabilities = logits.softmax(dim=1) if scheme.kind == MULTICLASS else logits.sigmoid()
        scores.append(probabilities.cpu().numpy())
    empty = np.zeros((0, len(scheme.classes)))
    return (np.concatenate(scores) if scores else empty), loss / max(len(data), 1)


def evaluate_model(
    model: nn.Module, data: ImageSet, *, device: torch.device, threshold: float = 0.5
) -> dict[str, float]:
    """All metrics of ``model`` on ``data``, including the loss."""
    scores, loss = predict(model, data, device=device)
    metrics = binary_metrics(data.labels.numpy(), scores, threshold=threshold)
    metrics[LOSS] = loss
    return metrics
