"""Pooled metrics from score histograms: every site's predictions count, none is shared.

Averaging per-site AUCs is not the AUC of the pooled population. Instead each
site bins its validation scores into fixed bins — counts of positives and
negatives, and the sum of scores, per bin — and the coordinator adds the
histograms. From the sums: ROC-AUC (ties inside a bin count one half), the
ROC curve, sensitivity/specificity/F1/accuracy at a threshold on a bin edge,
the Youden-optimal threshold, the threshold that keeps a target sensitivity,
expected calibration error on coarser bins, and a Hanley–McNeil 95 % interval
for the AUC. The bins are equal steps in logit space (:mod:`.binning`), so a
confident model's scores near 0 or 1 still spread over many bins.

Like every metric a site reports, histograms are statistics of its validation
images outside the DP guarantee of the model updates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common.metrics.binning import (
    BINS,
    CALIBRATION_BINS,
    Binning,
    binning_of,
    check_known,
)
from fedscan.common.metrics.ratios import safe_ratio
from fedscan.common.protocol import HIST_NEGATIVES, HIST_POSITIVES, HIST_SCORE_SUMS, HISTOGRAM_KEYS

ECE_BINS = CALIBRATION_BINS


@dataclass(frozen=True)
class ScoreHistogram:
    """Per-bin counts of positives and negatives, and the sum of scores in each bin."""

    positives: np.ndarray
    negatives: np.ndarray
    score_sums: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> ScoreHistogram:
        """From probabilities (float64 ones keep a confident model's scores near 1 apart)."""
        binning = binning_of(bins)
        scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
        labels = np.asarray(labels).reshape(-1).astype(bool)
        index = binning.index(scores)
        return cls(
            np.bincount(index[labels], minlength=bins),
            np.bincount(index[~labels], minlength=bins),
            np.bincount(index, weights=scores, minlength=bins),
        )

    @classmethod
    def empty(cls, bins: int = BINS) -> ScoreHistogram:
        return cls(np.zeros(bins, np.int64), np.zeros(bins, np.int64), np.zeros(bins))

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        if other.bins != self.bins:
            raise ValueError(
                f"Cannot add a {other.bins}-bin score histogram to a {self.bins}-bin one: the "
                "sites run different fedscan releases; install the same one everywhere."
            )
        return ScoreHistogram(
            self.positives + other.positives,
            self.negatives + other.negatives,
            self.score_sums + other.score_sums,
        )

    @property
    def bins(self) -> int:
        return int(self.positives.size)

    @property
    def binning(self) -> Binning:
        return binning_of(self.bins)

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
        check_known(parts[0].size)  # a bin count fedscan sends, or a ValueError that says so
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
    value = float((pos * (negatives_below + 0.5 * neg)).sum() / total)
    return min(max(value, 0.0), 1.0)  # noisy counts (a DP release) can step outside [0, 1]


def roc_curve(hist: ScoreHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, threshold) at every bin edge, from 1 down to 0."""
    thresholds = hist.binning.edges[::-1]
    tp = np.concatenate([[0], np.cumsum(hist.positives[::-1])])
    fp = np.concatenate([[0], np.cumsum(hist.negatives[::-1])])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1), thresholds


def at_threshold(hist: ScoreHistogram, threshold: float) -> dict[str, float]:
    """Scores ≥ ``threshold`` (rounded to the nearest bin edge) count as positive."""
    edge = hist.binning.nearest_edge(threshold)
    # Noisy counts (a DP release) are summed unclamped, then each sum clamped (post-processing).
    tp, fn = (
        max(float(hist.positives[edge:].sum()), 0.0),
        max(float(hist.positives[:edge].sum()), 0.0),
    )
    fp, tn = (
        max(float(hist.negatives[edge:].sum()), 0.0),
        max(float(hist.negatives[:edge].sum()), 0.0),
    )
    return {
        "accuracy": safe_ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": safe_ratio(tp, tp + fn),
        "specificity": safe_ratio(tn, tn + fp),
        "precision": safe_ratio(tp, tp + fp),
        "f1": safe_ratio(2 * tp, 2 * tp + fp + fn),
    }


def on_edge(hist: ScoreHistogram, threshold: float) -> float:
    """The bin edge that :func:`at_threshold` applies for ``threshold``: the one reported."""
    return float(hist.binning.edges[hist.binning.nearest_edge(threshold)])


def youden_threshold(hist: ScoreHistogram) -> float:
    """The bin edge maximising sensitivity + specificity − 1 (0.5 when undefined)."""
    fpr, tpr, thresholds = roc_curve(hist)
    if hist.positives.sum() == 0 or hist.negatives.sum() == 0:
        return 0.5
    return float(thresholds[int(np.argmax(tpr - fpr))])


def sensitivity_threshold(hist: ScoreHistogram, target: float) -> float:
    """The highest bin edge at which sensitivity is still ≥ ``target`` (0.5 when undefined)."""
    if not 0 < target <= 1:
        raise ValueError(f"A target sensitivity is in (0, 1]; got {target}.")
    fpr, tpr, thresholds = roc_curve(hist)
    if hist.positives.sum() == 0:
        return 0.5
    return float(thresholds[int(np.argmax(tpr >= target - 1e-12))])


OPERATING_POINTS = ("youden", "sensitivity:TARGET")


def operating_threshold(hist: ScoreHistogram, rule: str) -> float:
    """The stored threshold by the run's rule: ``youden`` or ``sensitivity:0.90``."""
    if rule == "youden":
        return youden_threshold(hist)
    return sensitivity_threshold(hist, parse_operating_point(rule))


def parse_operating_point(rule: str) -> float:
    """The target sensitivity of ``sensitivity:T`` (NaN for youden); a ValueError that says what
    to write otherwise."""
    if rule == "youden":
        return math.nan
    kind, _, value = rule.partition(":")
    try:
        target = float(value)
    except ValueError:
        target = math.nan
    if kind != "sensitivity" or not 0 < target < 1:
        raise ValueError(
            f"operating-point {rule!r} is neither 'youden' nor 'sensitivity:T' with T in (0, 1), "
            "e.g. 'sensitivity:0.90'."
        )
    return target


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
    """Positives, counts and score sums merged into ``bins`` equal-width bins (exact: sums add,
    and the calibration edges are histogram edges)."""
    edges = hist.binning.edges
    wanted = np.arange(bins + 1) / bins
    if np.abs(edges[[hist.binning.nearest_edge(w) for w in wanted]] - wanted).max() > 1e-9:
        raise ValueError(f"{bins} calibration bins do not fall on the histogram's bin edges.")
    target = np.minimum((hist.binning.midpoints() * bins).astype(np.int64), bins - 1)
    merged = [
        np.bincount(target, weights=values, minlength=bins)
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
        "threshold": on_edge(hist, threshold),
        "n": float(hist.positives.sum() + hist.negatives.sum()),
        "positives": float(hist.positives.sum()),
    }
