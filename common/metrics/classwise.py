"""What a site reports of a multiclass or multilabel evaluation, and what the coordinator pools.

A site sends :class:`ClassEvidence`: one one-vs-rest score histogram per class (the same fixed
bins as the binary histogram) and, for multiclass, the confusion matrix of its top-1 predictions —
counts and score sums only, never a per-image score. The coordinator adds the sites' evidence and
computes every pooled figure from the sums (:func:`pooled_class_metrics`): per-class AUC with its
95 % interval, macro and micro AUC, per-class thresholds (multilabel) and ECE; for multiclass top-1
and balanced accuracy, per-class sensitivity/precision/F1 and macro-F1.

Invariant: the sum of the sites' evidence equals the evidence of their pooled images
(tests/common/test_perclass.py), so a pooled figure never averages site figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common import protocol
from fedscan.common.metrics.confusion import ConfusionCounts
from fedscan.common.metrics.perclass import ClassHistograms, class_metrics
from fedscan.common.tasks import MULTICLASS, LabelScheme


@dataclass(frozen=True, eq=False)
class ClassEvidence:
    """One site's (or the pool's) per-class histograms and, for multiclass, confusion counts."""

    histograms: ClassHistograms
    confusion: ConfusionCounts | None = None

    @classmethod
    def of(
        cls, probabilities: np.ndarray, labels: np.ndarray, scheme: LabelScheme
    ) -> ClassEvidence:
        """From each image's class probabilities (N×K) and its integer label (``common/tasks``)."""
        classes = scheme.classes
        if scheme.kind == MULTICLASS:
            targets = np.asarray(labels, dtype=np.int64)
            predicted = np.argmax(probabilities, axis=1) if len(targets) else targets
            return cls(
                ClassHistograms.of_multiclass(probabilities, targets, classes),
                ConfusionCounts.of(predicted, targets, classes),
            )
        return cls(
            ClassHistograms.of_multilabel(probabilities, bit_matrix(labels, len(classes)), classes)
        )

    def __add__(self, other: ClassEvidence) -> ClassEvidence:
        if (self.confusion is None) != (other.confusion is None):
            raise ValueError("A multiclass and a multilabel evaluation cannot be pooled.")
        confusion = None
        if self.confusion is not None and other.confusion is not None:
            confusion = self.confusion + other.confusion
        return ClassEvidence(self.histograms + other.histograms, confusion)

    def to_lists(self) -> dict[str, list]:
        """The wire form: each K × BINS histogram array (and the K × K matrix) flattened."""
        lists = {
            key: array.reshape(-1).tolist() for key, array in self.histograms.to_arrays().items()
        }
        if self.confusion is not None:
            lists[protocol.CONFUSION_MATRIX] = self.confusion.to_array().reshape(-1).tolist()
        return lists

    @classmethod
    def from_lists(cls, scheme: LabelScheme, lists: Mapping[str, Any]) -> ClassEvidence:
        """Inverse of :meth:`to_lists` for the run's classes; ValueError when anything is off."""
        k = len(scheme.classes)
        arrays = {key: _rows(lists[key], k) for key in protocol.CLASS_HISTOGRAM_KEYS}
        histograms = ClassHistograms.from_arrays(scheme.classes, arrays)
        if scheme.kind != MULTICLASS:
            return cls(histograms)
        matrix = np.asarray(lists[protocol.CONFUSION_MATRIX])
        if matrix.size != k * k:
            raise ValueError(f"The confusion matrix must hold {k}×{k} counts; got {matrix.size}.")
        return cls(histograms, ConfusionCounts.from_array(scheme.classes, matrix.reshape(k, k)))


def bit_matrix(labels: np.ndarray, findings: int) -> np.ndarray:
    """Multi-label bit sets (N,) → an N×K 0/1 matrix, column k for finding k."""
    values = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    return (values >> np.arange(findings, dtype=np.int64)) & 1


def _rows(values: Any, k: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.size % k:
        raise ValueError(f"A per-class histogram must be {k} rows of equal length.")
    return array.reshape(k, -1)


def site_scalars(evidence: ClassEvidence) -> dict[str, float]:
    """The site's own headline figures (macro AUC; multiclass: top-1 and balanced accuracy); NaN
    where undefined, e.g. a class the site has no example of, as the binary metrics do."""
    found = class_metrics(evidence.histograms)
    scalars = {protocol.MACRO_AUC: float(found[protocol.MACRO_AUC])}
    if evidence.confusion is not None:
        counts = evidence.confusion.metrics()
        scalars[protocol.ACCURACY] = float(counts[protocol.ACCURACY])
        scalars[protocol.BALANCED_ACCURACY] = float(counts[protocol.BALANCED_ACCURACY])
    return scalars


def pooled_class_metrics(
    evidence: ClassEvidence, thresholds: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Every pooled figure of the summed evidence: the per-class detail under ``classes`` and the
    headline scalars beside it (``auc`` is the macro AUC, so tables that show one AUC show it)."""
    found = class_metrics(evidence.histograms, thresholds)
    pooled: dict[str, Any] = {**found, protocol.AUC: found[protocol.MACRO_AUC]}
    if evidence.confusion is not None:
        counts = evidence.confusion.metrics()
        for name, detail in counts.pop("classes").items():
            pooled["classes"][name].update(detail)
        pooled.update(counts)
        pooled["confusion"] = evidence.confusion.to_array().tolist()
    return pooled
