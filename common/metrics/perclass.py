"""Pooled per-class metrics of multi-class and multi-label findings, from summed histograms.

A finding with K classes is K one-vs-rest binary problems, so a site keeps one
:class:`~fedscan.common.metrics.histogram.ScoreHistogram` per class (same bins)
and sends them as three K × bins arrays. Multi-label (sigmoid per class): class
k's positives are the images labelled k, scored by their k-th probability.
Multi-class (softmax rows): class k's positives are the images *of* class k,
every image scored by its probability of k.

Invariants:

- Every figure here is computed from summed counts only: the sum of the sites'
  :class:`ClassHistograms` is the :class:`ClassHistograms` of the pooled images
  (exactly; addition is per bin), so a pooled figure is the figure of the
  pooled population, not an average of per-site figures.
- Undefined is NaN, never 0 or 0.5: a class with no positives or no negatives
  has AUC NaN and is left out of the macro AUC, whose record says how many
  classes counted.
- Every value returned is a Python ``float`` or ``int`` (JSON-friendly; NaN as
  ``json`` writes it), under the kebab-case record keys named below.

Like every metric a site reports, these are statistics of its validation
images outside the DP guarantee of the model updates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

from fedscan.common.metrics.histogram import (
    BINS,
    ScoreHistogram,
    at_threshold,
    auc,
    auc_confidence_interval,
    expected_calibration_error,
    on_edge,
    youden_threshold,
)
from fedscan.common.protocol import (
    AUC,
    CLASS_HIST_NEGATIVES,
    CLASS_HIST_POSITIVES,
    CLASS_HIST_SCORE_SUMS,
    CLASS_HISTOGRAM_KEYS,
    MACRO_AUC,
    MICRO_AUC,
    POSITIVES,
    SENSITIVITY,
    SPECIFICITY,
    THRESHOLD,
)

# --- message arrays of ClassHistograms (site → coordinator), each K × bins ---

# --- record keys of class_metrics (the per-class ones as in histogram.pooled_metrics) ---
PER_CLASS = "classes"
AUC_CI_LOW = "auc-ci-low"
AUC_CI_HIGH = "auc-ci-high"
ECE = "ece"
NEGATIVES = "negatives"
MACRO_AUC_CLASSES = "macro-auc-classes"  # how many classes had a defined AUC
MACRO_ECE = "macro-ece"


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple; raises ValueError unless they are distinct, non-empty names."""
    names = tuple(classes)
    if (
        not names
        or len(set(names)) != len(names)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValueError(f"Classes must be distinct, non-empty names; got {list(names)!r}.")
    return names


def mean_of_defined(values: Iterable[float]) -> tuple[float, int]:
    """(mean of the values that are not NaN, how many there were); NaN when none is."""
    defined = [value for value in values if not math.isnan(value)]
    return (float(np.mean(defined)) if defined else math.nan), len(defined)


def _score_matrix(scores: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"Scores must be N × {len(classes)} (one column per class); got {scores.shape}."
        )
    if not np.isfinite(scores).all():
        raise ValueError("Scores must be finite probabilities; found NaN or infinity.")
    return scores


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value; compare arrays
class ClassHistograms:
    """One one-vs-rest score histogram per class, every one with the same bins."""

    classes: tuple[str, ...]
    histograms: tuple[ScoreHistogram, ...]

    def __post_init__(self) -> None:
        check_classes(self.classes)
        if len(self.histograms) != len(self.classes):
            raise ValueError(
                f"{len(self.classes)} classes need as many histograms; got {len(self.histograms)}."
            )
        if len({hist.bins for hist in self.histograms}) != 1:
            raise ValueError("Every class's histogram must have the same bins.")

    @classmethod
    def of_multilabel(
        cls, scores: np.ndarray, targets: np.ndarray, classes: Sequence[str], bins: int = BINS
    ) -> ClassHistograms:
        """From N × K sigmoid probabilities and N × K 0/1 labels (an image may have several)."""
        names = check_classes(classes)
        scores = _score_matrix(scores, names)
        targets = np.asarray(targets)
        if targets.shape != scores.shape or not np.isin(targets, (0, 1)).all():
            raise ValueError(
                f"Multi-label targets must be 0/1 and shaped like the scores {scores.shape}; "
                f"got {targets.shape}."
            )
        return cls(
            names,
            tuple(ScoreHistogram.of(scores[:, k], targets[:, k], bins) for k in range(len(names))),
        )

    @classmethod
    def of_multiclass(
        cls,
        probabilities: np.ndarray,
        targets: np.ndarray,
        classes: Sequence[str],
        bins: int = BINS,
    ) -> ClassHistograms:
        """From N × K softmax rows and the N true class indices (one class per image)."""
        names = check_classes(classes)
        probabilities = _score_matrix(probabilities, names)
        targets = np.asarray(targets)
        if targets.shape != (len(probabilities),) or not np.isin(targets, range(len(names))).all():
            raise ValueError(
                f"Multi-class targets must be {len(probabilities)} class indices in "
                f"0..{len(names) - 1}; got shape {targets.shape}."
            )
        return cls(
            names,
            tuple(
                ScoreHistogram.of(probabilities[:, k], targets == k, bins)
                for k in range(len(names))
            ),
        )

    @classmethod
    def empty(cls, classes: Sequence[str], bins: int = BINS) -> ClassHistograms:
        names = check_classes(classes)
        return cls(names, tuple(ScoreHistogram.empty(bins) for _ in names))

    def __add__(self, other: ClassHistograms) -> ClassHistograms:
        if other.classes != self.classes:
            raise ValueError(
                f"Cannot add histograms of classes {list(other.classes)} to those of "
                f"{list(self.classes)}: every site must report the same classes in the same order."
            )
        if other.bins != self.bins:
            raise ValueError(f"Cannot add {other.bins}-bin histograms to {self.bins}-bin ones.")
        return ClassHistograms(
            self.classes,
            tuple(a + b for a, b in zip(self.histograms, other.histograms, strict=True)),
        )

    @property
    def bins(self) -> int:
        return self.histograms[0].bins

    def __getitem__(self, name: str) -> ScoreHistogram:
        return self.histograms[self.classes.index(name)]

    def total(self) -> ScoreHistogram:
        """The histograms summed over classes: every (image, class) pair is one case (micro)."""
        return reduce(ScoreHistogram.__add__, self.histograms)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The three K × bins arrays under :data:`CLASS_HISTOGRAM_KEYS`."""
        return {
            CLASS_HIST_POSITIVES: np.stack([h.positives for h in self.histograms]).astype(np.int64),
            CLASS_HIST_NEGATIVES: np.stack([h.negatives for h in self.histograms]).astype(np.int64),
            CLASS_HIST_SCORE_SUMS: np.stack([h.score_sums for h in self.histograms]).astype(
                np.float64
            ),
        }

    @classmethod
    def from_arrays(cls, classes: Sequence[str], arrays: Mapping[str, Any]) -> ClassHistograms:
        """From a site's arrays; raises ValueError when they cannot be real histograms."""
        names = check_classes(classes)
        positives, negatives, sums = (
            np.asarray(arrays[key], dtype=np.float64) for key in CLASS_HISTOGRAM_KEYS
        )
        shapes = {positives.shape, negatives.shape, sums.shape}
        if len(shapes) != 1 or positives.ndim != 2 or positives.shape[0] != len(names):
            raise ValueError(
                f"Class histograms must be three arrays of {len(names)} classes × bins; "
                f"got {sorted(shapes)}."
            )
        counts = np.stack([positives, negatives])
        if not (np.isfinite(counts).all() and np.isfinite(sums).all()) or (counts < 0).any():
            raise ValueError("Class histogram counts must be finite and ≥ 0.")
        if (counts != np.round(counts)).any() or (sums < 0).any():
            raise ValueError("Class histogram counts must be whole numbers and score sums ≥ 0.")
        return cls(
            names,
            tuple(
                ScoreHistogram(
                    positives[k].astype(np.int64), negatives[k].astype(np.int64), sums[k]
                )
                for k in range(len(names))
            ),
        )


def class_metrics(
    hists: ClassHistograms, thresholds: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Per-class AUC (with its 95 % interval), operating point and ECE; macro and micro AUC.

    Parameters
    ----------
    hists
        The (pooled or one site's) class histograms.
    thresholds : default None
        The operating threshold of some or all classes (e.g. chosen on an earlier round); a class
        not named here gets the Youden-optimal threshold of its own histogram.
    """
    given = dict(thresholds or {})
    unknown = sorted(set(given) - set(hists.classes))
    if unknown:
        raise ValueError(
            f"Thresholds name classes {unknown} that are not among {list(hists.classes)}."
        )
    if not all(0.0 <= value <= 1.0 for value in given.values()):  # NaN fails too
        raise ValueError(f"Thresholds must be probabilities in [0, 1]; got {given}.")
    per_class = {
        name: _one_class(hist, given.get(name))
        for name, hist in zip(hists.classes, hists.histograms, strict=True)
    }
    macro_auc, counted = mean_of_defined(entry[AUC] for entry in per_class.values())
    macro_ece, _ = mean_of_defined(entry[ECE] for entry in per_class.values())
    return {
        PER_CLASS: per_class,
        MACRO_AUC: macro_auc,
        MACRO_AUC_CLASSES: counted,
        MICRO_AUC: auc(hists.total()),
        MACRO_ECE: macro_ece,
    }


def _one_class(hist: ScoreHistogram, threshold: float | None) -> dict[str, float]:
    positives, negatives = int(hist.positives.sum()), int(hist.negatives.sum())
    value = auc(hist)
    low, high = auc_confidence_interval(value, positives, negatives)
    chosen = youden_threshold(hist) if threshold is None else on_edge(hist, threshold)
    point = at_threshold(hist, chosen)
    return {
        AUC: value,
        AUC_CI_LOW: low,
        AUC_CI_HIGH: high,
        THRESHOLD: chosen,
        SENSITIVITY: point[SENSITIVITY],
        SPECIFICITY: point[SPECIFICITY],
        ECE: expected_calibration_error(hist),
        POSITIVES: float(positives),  # floats, as histogram.pooled_metrics reports counts
        NEGATIVES: float(negatives),
    }
