"""Pooled multi-class counts: the top-1 confusion matrix, and per-label overlap of label maps.

A multi-class classifier's site sends its K × K confusion matrix (rows the true
class, columns the predicted one); a multi-label-map segmenter's site sends, per
structure 1..K of its label maps (0 is background), the true-positive,
false-positive and false-negative pixel counts, as a K × 3 array.

Invariants:

- Every figure here is computed from summed counts only: the sum of the sites'
  objects is the object of the pooled images (exactly; integer counts add), so
  pooled accuracy, balanced accuracy, macro-F1, Dice and IoU are those of the
  pooled population, never averages of per-site or per-image scores.
- Undefined is NaN (:func:`~fedscan.common.metrics.ratios.safe_ratio`), never 0:
  the recall of a class no image has, the F1 of a class neither true nor
  predicted, the Dice of a label absent from both prediction and truth (as in
  :class:`~fedscan.common.metrics.segmentation.OverlapCounts`). Macro figures
  average the defined values only and say how many there were — for balanced
  accuracy the classes present in the truth, for macro-F1 those true or
  predicted (scikit-learn's defaults).
- Every value returned is a Python ``float`` or ``int`` under kebab-case record keys.

Like every metric a site reports, these are statistics of its validation
images outside the DP guarantee of the model updates; no image, mask or pixel
position leaves a site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common.metrics.perclass import PER_CLASS, check_classes, mean_of_defined
from fedscan.common.metrics.ratios import safe_ratio
from fedscan.common.protocol import (
    ACCURACY,
    BALANCED_ACCURACY,
    DICE,
    F1,
    IOU,
    LABEL_OVERLAPS,
    PRECISION,
    SENSITIVITY,
)

# --- message arrays (site → coordinator) ---

# --- record keys ---
BALANCED_ACCURACY_CLASSES = "balanced-accuracy-classes"  # classes present in the truth
MACRO_F1 = "macro-f1"
MACRO_F1_CLASSES = "macro-f1-classes"  # classes true or predicted at least once
SUPPORT = "support"
PER_LABEL = "labels"
TRUE_POSITIVES = "true-positives"
FALSE_POSITIVES = "false-positives"
FALSE_NEGATIVES = "false-negatives"
OVERLAP_COLUMNS = (TRUE_POSITIVES, FALSE_POSITIVES, FALSE_NEGATIVES)
MEAN_DICE = "mean-dice"
MEAN_IOU = "mean-iou"
MEAN_LABELS = "mean-labels"  # labels with a defined Dice (present in prediction or truth)


def _indices(values: np.ndarray, count: int, what: str) -> np.ndarray:
    """``values`` as int64 indices in 0..count − 1; raises ValueError otherwise."""
    values = np.asarray(values)
    if values.dtype.kind not in "biu" and not (
        values.dtype.kind == "f" and np.array_equal(values, np.round(values))
    ):
        raise ValueError(f"{what} must be whole numbers; got dtype {values.dtype}.")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= count):
        raise ValueError(
            f"{what} must lie in 0..{count - 1}; found {values.min()}..{values.max()}."
        )
    return values


def _joint(truth: np.ndarray, predicted: np.ndarray, count: int) -> np.ndarray:
    """The count × count table of (truth, predicted) pairs, in one bincount."""
    pairs = truth.reshape(-1) * count + predicted.reshape(-1)
    return np.bincount(pairs, minlength=count * count).reshape(count, count).astype(np.int64)


def _counts(array: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A site's count array as int64; raises ValueError when it cannot be real counts."""
    values = np.asarray(array, dtype=np.float64)
    if values.shape != shape:
        raise ValueError(f"{what} must be {shape}; got {values.shape}.")
    if not np.isfinite(values).all() or (values < 0).any() or (values != np.round(values)).any():
        raise ValueError(f"{what} must hold whole, finite counts ≥ 0.")
    return values.astype(np.int64)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare arrays
class ConfusionCounts:
    """Top-1 confusion matrix of K classes: ``matrix[t, p]`` images of class t predicted p."""

    classes: tuple[str, ...]
    matrix: np.ndarray

    def __post_init__(self) -> None:
        check_classes(self.classes)
        if self.matrix.shape != (len(self.classes),) * 2:
            raise ValueError(
                f"{len(self.classes)} classes need a square matrix of that size; "
                f"got {self.matrix.shape}."
            )

    @classmethod
    def of(
        cls, predicted: np.ndarray, targets: np.ndarray, classes: Sequence[str]
    ) -> ConfusionCounts:
        """From N predicted and N true class indices."""
        names = check_classes(classes)
        predicted = _indices(predicted, len(names), "Predicted classes")
        targets = _indices(targets, len(names), "True classes")
        if predicted.shape != targets.shape:
            raise ValueError(
                f"Predictions {predicted.shape} and targets {targets.shape} differ in shape."
            )
        return cls(names, _joint(targets, predicted, len(names)))

    @classmethod
    def empty(cls, classes: Sequence[str]) -> ConfusionCounts:
        names = check_classes(classes)
        return cls(names, np.zeros((len(names), len(names)), np.int64))

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if other.classes != self.classes:
            raise ValueError(
                f"Cannot add a confusion matrix of classes {list(other.classes)} to one of "
                f"{list(self.classes)}: every site must report the same classes in the same order."
            )
        return ConfusionCounts(self.classes, self.matrix + other.matrix)

    def to_array(self) -> np.ndarray:
        return self.matrix.astype(np.int64)

    @classmethod
    def from_array(cls, classes: Sequence[str], array: Any) -> ConfusionCounts:
        """From a site's matrix; raises ValueError when it cannot be real counts."""
        names = check_classes(classes)
        return cls(names, _counts(array, (len(names),) * 2, "A confusion matrix"))

    def metrics(self) -> dict[str, Any]:
        """Top-1 accuracy, balanced accuracy, macro-F1, and per class recall, precision, F1."""
        hits = np.diag(self.matrix)
        support, called = self.matrix.sum(axis=1), self.matrix.sum(axis=0)
        recall = [safe_ratio(int(t), int(s)) for t, s in zip(hits, support, strict=True)]
        precision = [safe_ratio(int(t), int(c)) for t, c in zip(hits, called, strict=True)]
        f1 = [
            safe_ratio(2 * int(t), int(s) + int(c))  # 2TP / (2TP + FP + FN)
            for t, s, c in zip(hits, support, called, strict=True)
        ]
        balanced, present = mean_of_defined(recall)
        macro_f1, scored = mean_of_defined(f1)
        return {
            ACCURACY: safe_ratio(int(hits.sum()), int(self.matrix.sum())),
            BALANCED_ACCURACY: balanced,
            BALANCED_ACCURACY_CLASSES: present,
            MACRO_F1: macro_f1,
            MACRO_F1_CLASSES: scored,
            "n": float(self.matrix.sum()),  # as histogram.pooled_metrics names it
            PER_CLASS: {
                name: {
                    SENSITIVITY: recall[k],
                    PRECISION: precision[k],
                    F1: f1[k],
                    SUPPORT: float(support[k]),
                }
                for k, name in enumerate(self.classes)
            },
        }


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare arrays
class LabelOverlaps:
    """Per-structure pixel counts of label maps: ``counts[k - 1]`` = (TP, FP, FN) of label k."""

    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.counts.ndim != 2 or self.counts.shape[1] != 3 or not len(self.counts):
            raise ValueError(f"Label overlaps must be K × 3 with K ≥ 1; got {self.counts.shape}.")

    @classmethod
    def of(cls, predicted: np.ndarray, truth: np.ndarray, labels: int) -> LabelOverlaps:
        """From predicted and true label maps (any shape, batch included) with values 0..labels."""
        if labels < 1:
            raise ValueError(f"A label map needs at least one structure; got labels={labels}.")
        predicted = _indices(predicted, labels + 1, "Predicted label maps")
        truth = _indices(truth, labels + 1, "True label maps")
        if predicted.shape != truth.shape:
            raise ValueError(
                f"Predicted label maps {predicted.shape} and true ones {truth.shape} differ in "
                "shape."
            )
        joint = _joint(truth, predicted, labels + 1)
        tp = np.diag(joint)[1:]  # background (0) is not a structure: no counts of its own
        fp = joint.sum(axis=0)[1:] - tp  # predicted k where the truth is another label or 0
        fn = joint.sum(axis=1)[1:] - tp
        return cls(np.stack([tp, fp, fn], axis=1))

    @classmethod
    def empty(cls, labels: int) -> LabelOverlaps:
        return cls(np.zeros((labels, 3), np.int64))

    @property
    def labels(self) -> int:
        return int(len(self.counts))

    def __add__(self, other: LabelOverlaps) -> LabelOverlaps:
        if other.labels != self.labels:
            raise ValueError(
                f"Cannot add overlaps of {other.labels} labels to those of {self.labels}: every "
                "site must segment the same structures."
            )
        return LabelOverlaps(self.counts + other.counts)

    def to_array(self) -> np.ndarray:
        return self.counts.astype(np.int64)

    def to_lists(self) -> dict[str, list[int]]:
        """The counts as a site's reply carries them: K × 3 flattened row by row."""
        return {LABEL_OVERLAPS: [int(v) for v in self.to_array().reshape(-1)]}

    @classmethod
    def from_array(cls, array: Any) -> LabelOverlaps:
        """From a site's K × 3 array; raises ValueError when it cannot be real counts."""
        shape = np.shape(array)
        if len(shape) != 2 or shape[1] != 3:
            raise ValueError(f"Label overlaps must be K × 3 with K ≥ 1; got {shape}.")
        return cls(_counts(array, shape, "Label overlaps"))

    def metrics(self, label_names: Sequence[str]) -> dict[str, Any]:
        """Dice and IoU of every label from the pooled counts, and their means over defined labels.

        Dice 2TP / (2TP + FP + FN) is 2|P∧T| / (|P| + |T|), as in OverlapCounts.
        """
        names = check_classes(label_names)
        if len(names) != self.labels:
            raise ValueError(f"{self.labels} labels need as many names; got {list(names)}.")
        per_label = {}
        for name, (tp, fp, fn) in zip(names, self.counts.tolist(), strict=True):
            per_label[name] = {
                DICE: safe_ratio(2.0 * tp, 2.0 * tp + fp + fn),
                IOU: safe_ratio(float(tp), float(tp + fp + fn)),
                **dict(zip(OVERLAP_COLUMNS, (float(tp), float(fp), float(fn)), strict=True)),
            }
        mean_dice, defined = mean_of_defined(entry[DICE] for entry in per_label.values())
        mean_iou, _ = mean_of_defined(entry[IOU] for entry in per_label.values())
        return {
            PER_LABEL: per_label,
            MEAN_DICE: mean_dice,
            MEAN_IOU: mean_iou,
            MEAN_LABELS: defined,
        }
