"""Pooled metrics from score histograms: every site's predictions count, none is shared.

Averaging per-site AUCs is not the AUC of the pooled population. Instead each
site bins its validation scores into fixed bins — counts of positives and
negatives, and the sum of scores, per bin — and the coordinator adds the
histograms. From the sums: ROC-AUC (ties inside a bin count one half), the
ROC curve, sensitivity/specificity/F1/accuracy at a threshold on a bin edge,
the Youden-optimal threshold, expected calibration error on coarser bins, and
a Hanley–McNeil 95 % interval for the AUC.

Like every metric a site reports, histograms are statistics of its validation
images outside the DP guarantee of the model updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common.metrics.ratios import safe_ratio
from fedscan.common.protocol import HIST_NEGATIVES, HIST_POSITIVES, HIST_SCORE_SUMS, HISTOGRAM_KEYS

BINS = 1000  # fine enough that the binned AUC is within 0.002 of the exact one in practice
ECE_BINS = 10


@dataclass(frozen=True)
class ScoreHistogram:
    """Per-bin counts of positives and negatives, and the sum of scores in each bin."""

    positives: np.ndarray
    negatives: np.ndarray
    score_sums: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> ScoreHistogram:
        scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
        labels = np.asarray(labels).reshape(-1).astype(bool)
        index = np.minimum((scores * bins).astype(np.int64), bins - 1)
        return cls(
            np.bincount(index[labels], minlength=bins),
            np.bincount(index[~labels], minlength=bins),
            np.bincount(index, weights=scores, minlength=bins),
        )

    @classmethod
    def empty(cls, bins: int = BINS) -> ScoreHistogram:
        return cls(np.zeros(bins, np.int64), np.zeros(bins, np.int64), np.zeros(bins))

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        return ScoreHistogram(
            self.positives + other.positives,
            self.negatives + other.negatives,
            self.score_sums + other.score_sums,
        )

    @property
    def bins(self) -> int:
        return int(self.positives.size)

    def to_lists(self) -> dict[str, list]:
        """The three lists under their message keys
        (:data:`~fedscan.common.protocol.HISTOGRAM_KEYS`)."""
        return {
            HIST_POSITIVES: self.positives.astype(int).tolist(),
            HIST_NEGATIVES: self.negatives.astype(int).tolist(),
            HIST_SCORE_SUMS: self.score_sums.astype(float).tolist(),
        }

    @classmethod
    def from_lists(cls, values: Mapping[str, Any]) -> ScoreHistogram:
        parts = [np.asarray(values[key]) for key in HISTOGRAM_KEYS]
        if len({part.size for part in parts}) != 1 or (parts[0] < 0).any() or (parts[1] < 0).any():
            raise ValueError(
                "A score histogram is malformed (lengths differ or counts are negative)."
            )
        return cls(
            parts[0].astype(np.int64), parts[1].astype(np.int64), parts[2].astype(np.float64)
        )


def auc(hist: ScoreHistogram) -> float:
    """P(score of a positive > score of a negative), ties within a bin counting one half."""
    pos, neg = hist.positives.astype(np.float64), hist.negatives.astype(np.float64)
    total = pos.sum() * neg.sum()
    if total == 0:
        return math.nan
    negatives_below = np.cumsum(neg) - neg
    return float((pos * (negatives_below + 0.5 * neg)).sum() / total)


def roc_curve(hist: ScoreHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, threshold) at every bin edge, from 1 down to 0."""
    thresholds = np.arange(hist.bins, -1, -1) / hist.bins
    tp = np.concatenate([[0], np.cumsum(hist.positives[::-1])])
    fp = np.concatenate([[0], np.cumsum(hist.negatives[::-1])])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1), thresholds


def at_threshold(hist: ScoreHistogram, threshold: float) -> dict[str, float]:
    """Scores ≥ ``threshold`` (rounded to a bin edge) count as positive."""
    edge = int(round(threshold * hist.bins))
    tp, fn = float(hist.positives[edge:].sum()), float(hist.positives[:edge].sum())
    fp, tn = float(hist.negatives[edge:].sum()), float(hist.negatives[:edge].sum())
    return {
        "accuracy": safe_ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": safe_ratio(tp, tp + fn),
        "specificity": safe_ratio(tn, tn + fp),
        "precision": safe_ratio(tp, tp + fp),
        "f1": safe_ratio(2 * tp, 2 * tp + fp + fn),
    }


def youden_threshold(hist: ScoreHistogram) -> float:
    """The bin edge maximising sensitivity + specificity − 1 (0.5 when undefined)."""
    fpr, tpr, thresholds = roc_curve(hist)
    if hist.positives.sum() == 0 or hist.negatives.sum() == 0:
        return 0.5
    return float(thresholds[int(np.argmax(tpr - fpr))])


def expected_calibration_error(hist: ScoreHistogram, bins: int = ECE_BINS) -> float:
    """Σ_b (n_b/n)·|mean score_b − positive rate_b| over ``bins`` equal-width bins."""
    pos, count, sums = _calibration_bins(hist, bins)
    if count.sum() == 0:
        return math.nan
    filled = count > 0
    gap = np.abs(sums[filled] / count[filled] - pos[filled] / count[filled])
    return float((count[filled] * gap).sum() / count.sum())


def reliability_curve(
    hist: ScoreHistogram, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean score, observed positive rate, count) per calibration bin; NaN where a bin is empty."""
    pos, count, sums = _calibration_bins(hist, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / count, pos / count, count


def _calibration_bins(hist: ScoreHistogram, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives, counts and score sums merged into ``bins`` equal-width bins (exact: sums add)."""
    if hist.bins % bins:
        raise ValueError(f"{bins} calibration bins must divide the {hist.bins} histogram bins.")
    merged = [
        values.reshape(bins, -1).sum(axis=1)
        for values in (hist.positives, hist.positives + hist.negatives, hist.score_sums)
    ]
    return merged[0], merged[1], merged[2]


def auc_confidence_interval(
    value: float, positives: int, negatives: int, z: float = 1.959964
) -> tuple[float, float]:
    """Hanley & McNeil (1982) standard error of the AUC, as a 95 % interval clipped to [0, 1]."""
    if math.isnan(value) or positives == 0 or negatives == 0:
        return math.nan, math.nan
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (
        value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)
    ) / (positives * negatives)
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, value - half), min(1.0, value + half)


def pooled_metrics(hist: ScoreHistogram, threshold: float) -> dict[str, float]:
    """Everything a report needs from one (pooled or per-site) histogram."""
    value = auc(hist)
    low, high = auc_confidence_interval(value, int(hist.positives.sum()), int(hist.negatives.sum()))
    return {
        "auc": value,
        "auc-ci-low": low,
        "auc-ci-high": high,
        **at_threshold(hist, threshold),
        "ece": expected_calibration_error(hist),
        "threshold": threshold,
        "n": float(hist.positives.sum() + hist.negatives.sum()),
        "positives": float(hist.positives.sum()),
    }
