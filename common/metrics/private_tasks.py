"""DP metric releases of the other task kinds: per-class evidence and segmentation overlap counts.

Like the binary release (:mod:`fedscan.common.metrics.private`), one Gaussian mechanism per
evaluated model, every coordinate noised with one standard deviation ``noise_std`` =
noise multiplier × sensitivity × √(models), counts released unclamped:

- **Per-class evidence** (multiclass, multilabel): each class's one-vs-rest histogram in the 26
  coarse bins, and for multiclass the K × K confusion matrix. One validation image is a positive or
  a negative in exactly one bin of each of the K histograms, and one cell of the matrix: L2
  sensitivity √(K + 1) (multiclass) or √K (multilabel). No loss and no score sums are released.
- **Segmentation overlap counts** (one foreground structure): the intersection, predicted and true
  foreground pixels, each in units of the pixels per image P, and the image count. One image moves
  each of the three by at most P (one unit) and the count by 1: sensitivity 2. Dice and IoU are
  ratios of the noisy sums (Hausdorff distance and loss are not released).
- **Label-map overlap counts** (K structures): each structure's (TP, FP, FN) pixels in units of
  P, and the image count. One image's pixels are each predicted as one label and truly one label,
  so over the K structures its TP + FP sum to at most P and its TP + FN too: the squares of its
  3K counts sum to at most (Σ TP + FP)² + (Σ FN)² ≤ 2 units, and the count moves by 1: L2
  sensitivity √3, whatever K. Per-structure Dice and IoU are ratios of the noisy sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common import protocol
from fedscan.common.metrics.binning import COARSE_BINS, binning_of
from fedscan.common.metrics.classwise import ClassEvidence
from fedscan.common.metrics.confusion import MEAN_DICE, MEAN_IOU, ConfusionCounts, LabelOverlaps
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.metrics.perclass import (
    AUC_CI_HIGH,
    AUC_CI_LOW,
    NEGATIVES,
    POSITIVES,
    ClassHistograms,
)
from fedscan.common.metrics.private import NoisyEvaluation, coarsen, noisy_auc_interval
from fedscan.common.metrics.segmentation import OverlapCounts


def _noise(std: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng().normal(0.0, std, shape)  # OS entropy, as the binary release


@dataclass(frozen=True, eq=False)
class NoisyClassEvidence:
    """Noisy coarse per-class histograms (K × COARSE_BINS) and confusion matrix (or None)."""

    classes: tuple[str, ...]
    positives: np.ndarray
    negatives: np.ndarray
    confusion: np.ndarray | None
    noise_std: float

    @classmethod
    def release(
        cls, evidence: ClassEvidence, *, noise_multiplier: float, models: int = 1
    ) -> NoisyClassEvidence:
        histograms = [coarsen(hist) for hist in evidence.histograms.histograms]
        k = len(histograms)
        matrix = evidence.confusion
        sensitivity = math.sqrt(k + (1 if matrix is not None else 0))
        std = noise_multiplier * sensitivity * math.sqrt(models)
        positives = np.stack([h.positives for h in histograms]).astype(np.float64)
        negatives = np.stack([h.negatives for h in histograms]).astype(np.float64)
        confusion = None
        if matrix is not None:
            confusion = matrix.to_array().astype(np.float64) + _noise(std, (k, k))
        return cls(
            tuple(evidence.histograms.classes),
            positives + _noise(std, positives.shape),
            negatives + _noise(std, negatives.shape),
            confusion,
            std,
        )

    def evidence(self) -> ClassEvidence:
        """The noisy counts as evidence (post-processing), each bin's scores at its midpoint.
        Not thresholded as the binary release's pooled sum is (:func:`denoised`): the coordinator
        sums each site's evidence, and a site's own counts are too small to threshold."""
        midpoints = binning_of(COARSE_BINS).midpoints()
        histograms = tuple(
            ScoreHistogram(pos, neg, (pos + neg) * midpoints)
            for pos, neg in zip(self.positives, self.negatives, strict=True)
        )
        matrix = None if self.confusion is None else ConfusionCounts(self.classes, self.confusion)
        return ClassEvidence(ClassHistograms(self.classes, histograms), matrix)

    def images(self) -> int:
        """The noisy image count (every image is in each class's histogram once)."""
        totals = self.positives.sum(axis=1) + self.negatives.sum(axis=1)
        return max(round(float(totals.mean())), 1)

    def to_lists(self) -> dict[str, list[float]]:
        lists = {
            protocol.DP_CLASS_HIST_POSITIVES: self.positives.reshape(-1).tolist(),
            protocol.DP_CLASS_HIST_NEGATIVES: self.negatives.reshape(-1).tolist(),
        }
        if self.confusion is not None:
            lists[protocol.DP_CONFUSION_MATRIX] = self.confusion.reshape(-1).tolist()
        return lists

    @classmethod
    def from_lists(
        cls, classes: tuple[str, ...], lists: Mapping[str, Any], noise_std: float, multiclass: bool
    ) -> NoisyClassEvidence:
        """Read a release back; ValueError when its shapes or values are wrong."""
        k = len(classes)
        rows = [
            np.asarray(lists[key], dtype=np.float64)
            for key in (protocol.DP_CLASS_HIST_POSITIVES, protocol.DP_CLASS_HIST_NEGATIVES)
        ]
        if any(row.size != k * COARSE_BINS for row in rows):
            raise ValueError(f"Noisy per-class histograms hold {k} × {COARSE_BINS} counts.")
        confusion = None
        if multiclass:
            confusion = np.asarray(lists[protocol.DP_CONFUSION_MATRIX], dtype=np.float64)
            if confusion.size != k * k:
                raise ValueError(f"A noisy confusion matrix holds {k} × {k} counts.")
            confusion = confusion.reshape(k, k)
        found = [*rows, *([] if confusion is None else [confusion])]
        if not all(np.isfinite(a).all() for a in found) or not noise_std > 0:
            raise ValueError("A noisy per-class release holds non-finite values or no noise.")
        shape = (k, COARSE_BINS)
        return cls(classes, rows[0].reshape(shape), rows[1].reshape(shape), confusion, noise_std)


@dataclass(frozen=True)
class NoisyOverlap:
    """Noisy foreground pixel sums (in pixels) and image count of one segmentation evaluation."""

    counts: np.ndarray  # intersection, predicted, truth (pixels), images
    noise_std: float  # of the image count; of the pixel sums: × the pixels per image

    @classmethod
    def release(
        cls,
        counts: OverlapCounts,
        images: int,
        *,
        pixels: int,
        noise_multiplier: float,
        models: int = 1,
    ) -> NoisyOverlap:
        units = np.array([counts.intersection, counts.predicted, counts.truth]) / pixels
        std = noise_multiplier * 2.0 * math.sqrt(models)
        noisy = np.concatenate([units, [float(images)]]) + _noise(std, (4,))
        noisy[:3] *= pixels
        return cls(noisy, std)

    def overlap(self) -> OverlapCounts:
        """The noisy sums as overlap counts (post-processing: clamped at 0)."""
        return OverlapCounts.from_noisy(*(float(v) for v in self.counts[:3]))

    def images(self) -> int:
        return max(round(float(self.counts[3])), 1)

    def to_lists(self) -> dict[str, list[float]]:
        return {protocol.DP_SEG_COUNTS: [float(v) for v in self.counts]}

    @classmethod
    def from_lists(cls, lists: Mapping[str, Any], noise_std: float) -> NoisyOverlap:
        counts = np.asarray(lists[protocol.DP_SEG_COUNTS], dtype=np.float64)
        if counts.shape != (4,) or not np.isfinite(counts).all() or not noise_std > 0:
            raise ValueError("A noisy overlap release holds 4 finite values and some noise.")
        return cls(counts, noise_std)


@dataclass(frozen=True)
class NoisyLabelOverlaps:
    """Noisy per-structure (TP, FP, FN) pixel sums (K × 3) and image count of one label-map
    evaluation."""

    counts: np.ndarray  # K × 3, pixels
    images: float
    noise_std: float  # of the image count; of the pixel sums: × the pixels per image

    SENSITIVITY = math.sqrt(3.0)  # see the module docstring

    @classmethod
    def release(
        cls,
        overlaps: LabelOverlaps,
        images: int,
        *,
        pixels: int,
        noise_multiplier: float,
        models: int = 1,
    ) -> NoisyLabelOverlaps:
        units = overlaps.to_array().astype(np.float64) / pixels
        std = noise_multiplier * cls.SENSITIVITY * math.sqrt(models)
        noisy = (units + _noise(std, units.shape)) * pixels
        return cls(noisy, float(images) + float(_noise(std, (1,))[0]), std)

    def overlaps(self) -> LabelOverlaps:
        """The noisy sums as counts (post-processing: rounded, clamped at 0)."""
        return LabelOverlaps(np.maximum(np.rint(self.counts), 0).astype(np.int64))

    def image_count(self) -> int:
        return max(round(self.images), 1)

    def site_figures(self) -> dict[str, float]:
        """The mean Dice and IoU over the structures (those defined) of the noisy counts."""
        names = tuple(f"label-{k + 1}" for k in range(len(self.counts)))
        found = self.overlaps().metrics(names)
        return {protocol.DICE: found[MEAN_DICE], protocol.IOU: found[MEAN_IOU]}

    def to_lists(self) -> dict[str, list[float]]:
        flat = [float(v) for v in self.counts.reshape(-1)]
        return {protocol.DP_LABEL_OVERLAPS: [*flat, float(self.images)]}

    @classmethod
    def from_lists(
        cls, lists: Mapping[str, Any], noise_std: float, structures: int
    ) -> NoisyLabelOverlaps:
        values = np.asarray(lists[protocol.DP_LABEL_OVERLAPS], dtype=np.float64)
        if values.shape != (3 * structures + 1,):
            raise ValueError(
                f"A noisy label-map release holds {3 * structures + 1} values for {structures} "
                f"structures; got {values.size}."
            )
        if not np.isfinite(values).all() or not noise_std > 0:
            raise ValueError("A noisy label-map release holds non-finite values or no noise.")
        return cls(values[:-1].reshape(structures, 3), float(values[-1]), noise_std)


def pooled_noisy_evidence(
    total: ClassEvidence, noise_std: float
) -> tuple[ClassEvidence, dict[str, dict[str, float]]]:
    """The coordinator's sum of sites' per-class releases (``noise_std``: its noise, in
    quadrature over the noisy sites) as evidence each class's counts denoised as the binary pooled
    sum's are (:func:`~fedscan.common.metrics.private.denoised`), and what each class's figures
    then need corrected: its AUC interval widened for the noise
    (:func:`~fedscan.common.metrics.private.noisy_auc_interval`), its counts as released."""
    if noise_std <= 0:
        return total, {}
    histograms, corrections = [], {}
    for name, hist in zip(total.histograms.classes, total.histograms.histograms, strict=True):
        noisy = NoisyEvaluation(hist.positives, hist.negatives, 0.0, noise_std)
        low, high = noisy_auc_interval(noisy)
        corrections[name] = {
            AUC_CI_LOW: low,
            AUC_CI_HIGH: high,
            POSITIVES: float(hist.positives.sum()),
            NEGATIVES: float(hist.negatives.sum()),
        }
        kept = noisy.histogram()
        histograms.append(ScoreHistogram(kept.positives, kept.negatives, kept.score_sums))
    hists = ClassHistograms(total.histograms.classes, tuple(histograms))
    return ClassEvidence(hists, total.confusion), corrections


def coarse_evidence(evidence: ClassEvidence) -> ClassEvidence:
    """Per-class evidence with each class's histogram merged into the coarse bins (exact)."""
    histograms = tuple(coarsen(hist) for hist in evidence.histograms.histograms)
    return ClassEvidence(
        ClassHistograms(evidence.histograms.classes, histograms), evidence.confusion
    )
