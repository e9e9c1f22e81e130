"""Segmentation metrics: Dice and IoU from overlap counts, Hausdorff-95, and mask prediction.

A site reports its validation overlap as three pixel counts — intersection,
predicted foreground, true foreground — summed over its images. The
coordinator adds the counts of every site: Dice 2·ΣI / (ΣP + ΣT) and IoU
ΣI / (ΣP + ΣT − ΣI) are then exactly the scores of the pooled masks, which an
average of per-site scores is not. Like the score histograms of
classification, the counts are statistics of validation images outside the DP
guarantee of the model updates; no mask or pixel position leaves a site.

Hausdorff-95 (pixels at the model's input size) is the mean over images where
both the prediction and the truth mark something; it is per site only (a
distance does not pool from counts).

A label map of K structures (masks 0..K, K + 1 softmax outputs) is predicted by the most probable
label of each pixel; its counts are K × (TP, FP, FN), one row per structure
(:class:`~fedscan.common.metrics.confusion.LabelOverlaps`), beside the foreground (any structure)
counts above; a site's Dice and IoU are then the means over its structures, Hausdorff-95 that of
the foreground.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.metrics.confusion import MEAN_DICE, MEAN_IOU, LabelOverlaps
from fedscan.common.metrics.ratios import safe_ratio
from fedscan.common.protocol import COUNT_KEYS, DICE, HD95, IOU, LOSS


@dataclass(frozen=True)
class OverlapCounts:
    """Foreground pixel counts over a set of images: predicted ∧ true, predicted, true."""

    intersection: float = 0.0
    predicted: float = 0.0
    truth: float = 0.0

    @classmethod
    def of(cls, predicted: np.ndarray, truth: np.ndarray) -> OverlapCounts:
        predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
        if predicted.shape != truth.shape:
            raise ValueError(
                f"Predicted masks {predicted.shape} and true masks {truth.shape} differ in shape."
            )
        return cls(
            float(np.count_nonzero(predicted & truth)),
            float(np.count_nonzero(predicted)),
            float(np.count_nonzero(truth)),
        )

    @classmethod
    def from_noisy(cls, intersection: float, predicted: float, truth: float) -> OverlapCounts:
        """Noisy sums (a DP release, or several summed) as counts, by post-processing: each ≥ 0,
        the intersection ≤ both."""
        intersection, predicted, truth = (
            max(float(v), 0.0) for v in (intersection, predicted, truth)
        )
        return cls(min(intersection, predicted, truth), predicted, truth)

    def as_tuple(self) -> tuple[float, float, float]:
        return self.intersection, self.predicted, self.truth

    def __add__(self, other: OverlapCounts) -> OverlapCounts:
        return OverlapCounts(
            self.intersection + other.intersection,
            self.predicted + other.predicted,
            self.truth + other.truth,
        )

    @property
    def dice(self) -> float:
        """2|P∧T| / (|P| + |T|); NaN when neither marks anything (undefined, not 1)."""
        return safe_ratio(2.0 * self.intersection, self.predicted + self.truth)

    @property
    def iou(self) -> float:
        return safe_ratio(self.intersection, self.predicted + self.truth - self.intersection)

    def to_metrics(self) -> dict[str, float]:
        return dict(zip(COUNT_KEYS, (self.intersection, self.predicted, self.truth), strict=True))

    @classmethod
    def from_metrics(cls, metrics: dict) -> OverlapCounts:
        """Counts from a site's reply; raises ValueError when they cannot be real counts."""
        intersection, predicted, truth = (float(metrics[key]) for key in COUNT_KEYS)
        if not all(
            math.isfinite(v) and v >= 0 for v in (intersection, predicted, truth)
        ) or intersection > min(predicted, truth):
            raise ValueError(
                "Overlap counts must be finite, ≥ 0, and the intersection ≤ both sums."
            )
        return cls(intersection, predicted, truth)


def dice_interval(sums: tuple[float, float, float], pixel_std: float) -> tuple[float, float]:
    """95 % interval of the Dice 2I/(P + T) from noisy sums ``(I, P, T)`` (unclamped, as released)
    that each carry independent Gaussian noise of ``pixel_std`` pixels: Fieller's interval for a
    ratio of two normal means, the d with (2I − d·S)² ≤ z²·(4σ² + 2d²σ²), S = P + T. When S is
    not clearly above its noise the set is unbounded: [0, 1]. Exact for the Gaussian noise, where
    resampling around the clamped figures covered the true Dice in 40 of 60 trials."""
    z2 = 1.959964**2
    intersection, total = sums[0], sums[1] + sums[2]
    var = pixel_std**2
    a = total**2 - 2 * z2 * var
    b = -4 * intersection * total
    c = 4 * intersection**2 - 4 * z2 * var
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        return 0.0, 1.0
    roots = ((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a))
    return max(0.0, min(roots)), min(1.0, max(roots))


def pooled_overlap(counts: OverlapCounts, images: int) -> dict[str, float]:
    """What a round's record holds for the pooled validation masks of every site."""
    return {
        DICE: counts.dice,
        IOU: counts.iou,
        "n": float(images),
        "intersection": counts.intersection,
        "predicted": counts.predicted,
        "truth": counts.truth,
    }


def hausdorff95(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean 95th-percentile Hausdorff distance (pixels) over the N×1×H×W images where both the
    prediction and the truth mark something; NaN where no image does."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    both = predicted.reshape(len(predicted), -1).any(axis=1) & truth.reshape(len(truth), -1).any(
        axis=1
    )
    if not both.any():
        return math.nan
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        distances = compute_hausdorff_distance(
            torch.from_numpy(predicted[both]).float(),
            torch.from_numpy(truth[both]).float(),
            percentile=95,
        )
    values = distances.numpy().reshape(-1)
    return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan


@torch.no_grad()
def predict_masks(
    model: nn.Module,
    data: ImageSet,
    *,
    device: torch.device,
    batch_size: int = 64,
    structures: tuple[str, ...] = (),
) -> tuple[np.ndarray, float]:
    """Foreground probabilities (N×1×S×S) of every image, or for a label map of ``structures``
    the (K + 1) label probabilities (N×(K+1)×S×S), and the mean Dice + log-loss (training loss)."""
    from fedscan.common.models.training import training_loss

    if data.masks is None:
        raise ValueError("Segmentation needs masks: load the site with masks=True.")
    model.to(device).eval()
    criterion = training_loss("dice-ce", kind="segmentation", classes=structures)
    activation = (lambda x: torch.softmax(x, dim=1)) if structures else torch.sigmoid
    probabilities, loss = [], 0.0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        logits = model(images)
        loss += (
            float(criterion(logits, data.masks[start : start + batch_size].to(device)))
            * images.shape[0]
        )
        probabilities.append(activation(logits).cpu().numpy())
    shape = (0, len(structures) + 1 if structures else 1, *data.images.shape[2:])
    return (
        np.concatenate(probabilities) if probabilities else np.zeros(shape, np.float32)
    ), loss / max(len(data), 1)


def evaluate_segmentation(
    model: nn.Module, data: ImageSet, *, device: torch.device, threshold: float = 0.5
) -> tuple[dict[str, float], OverlapCounts]:
    """(Dice, IoU, Hausdorff-95, loss of ``model`` on ``data``; the overlap counts to pool)."""
    probabilities, loss = predict_masks(model, data, device=device)
    return score_masks(probabilities >= threshold, data.require_masks().numpy() >= 0.5, loss=loss)


def evaluate_label_map(
    model: nn.Module, data: ImageSet, structures: tuple[str, ...], *, device: torch.device
) -> tuple[dict[str, float], OverlapCounts, LabelOverlaps]:
    """(mean Dice and IoU over ``structures``, foreground Hausdorff-95, loss; the foreground
    counts; the per-structure counts) of a label-map model on ``data``."""
    probabilities, loss = predict_masks(model, data, device=device, structures=structures)
    return score_label_map(probabilities.argmax(axis=1)[:, None], data, structures, loss=loss)


def score_label_map(
    predicted: np.ndarray, data: ImageSet, structures: tuple[str, ...], *, loss: float
) -> tuple[dict[str, float], OverlapCounts, LabelOverlaps]:
    """:func:`evaluate_label_map`'s figures for predicted N×1×S×S label maps of ``data``."""
    truth = np.rint(data.require_masks().numpy()).astype(np.int64)
    metrics, foreground = score_masks(predicted > 0, truth > 0, loss=loss)
    per_label = LabelOverlaps.of(predicted, truth, labels=len(structures))
    means = per_label.metrics(structures)
    metrics.update({DICE: means[MEAN_DICE], IOU: means[MEAN_IOU]})
    return metrics, foreground, per_label


def score_masks(
    predicted: np.ndarray, truth: np.ndarray, *, loss: float
) -> tuple[dict[str, float], OverlapCounts]:
    """(Dice, IoU, Hausdorff-95 and ``loss``; the overlap counts) of predicted against true N×1×S×S
    masks."""
    counts = OverlapCounts.of(predicted, truth)
    metrics = {DICE: counts.dice, IOU: counts.iou, HD95: hausdorff95(predicted, truth), LOSS: loss}
    return metrics, counts
