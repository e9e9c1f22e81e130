"""A site's validation evaluation as one Gaussian-mechanism release (``[privacy] metrics = "dp"``).

What leaves, per evaluated model: the counts of positives and of negatives in each of the 26
coarse score bins (:func:`~.binning.coarse_binning`) and the sum of the images' validation
losses, each clipped to ``LOSS_CLIP`` and released in units of ``LOSS_CLIP``; every coordinate
plus Gaussian noise of one standard deviation ``noise_std``. Nothing else: a site's AUC,
accuracy, image count and mean loss are computed from these noisy values (post-processing, free).

Sensitivity (add or remove one validation image): exactly one count changes, by 1, and the loss
sum by at most 1 unit, so the L2 sensitivity is √2 (``SENSITIVITY``); ``noise_std`` = noise
multiplier z × √2. Several models scored on the same images in one message (cross-site
validation, m models) are one release of sensitivity √(2m): noise_std = z × √(2m), which costs
what one model's release at z costs. Score sums per bin are not released (each bin's mean score is
its midpoint), which keeps the sensitivity at √2.

Invariants: the noise is drawn from the OS's entropy (a generator the coordinator could seed
would let it subtract the noise); counts are released unclamped (negative values included), so
that the coordinator's sums stay unbiased; figures are computed from the sums with every count
under two noise deviations read as 0 (:func:`denoised`, post-processing). The pooled AUC's 95 %
interval adds the noise's own spread (a parametric bootstrap of the summed noise, through the same
thresholding) to Hanley–McNeil's, and half the share of pairs the coarse bins tie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedscan.common import protocol
from fedscan.common.metrics.binning import COARSE_BINS, binning_of
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    auc,
    auc_confidence_interval,
    operating_threshold,
    pooled_metrics,
)

METRIC_POLICIES = ("dp", "coarse", "final-only", "none")  # [privacy] metrics, at the site
LOSS_CLIP = 10.0  # binary cross-entropy of one image, clipped: a confident mistake costs ≥ 16
SENSITIVITY = math.sqrt(2.0)  # one count by 1, the loss sum by ≤ 1 unit of LOSS_CLIP
DENOISE_SDS = 2.0  # noisy counts below 2 noise deviations read as 0 (see denoised)
_BOOTSTRAP_DRAWS = 400  # the AUC's spread under the summed noise: ±0.001 on its std at 400
_Z95 = 1.959964


@dataclass(frozen=True)
class NoisyEvaluation:
    """One site's released evaluation of one model (or their sum over sites)."""

    positives: np.ndarray  # float64, COARSE_BINS, noisy (may be negative)
    negatives: np.ndarray
    loss_units: float  # Σ min(loss, LOSS_CLIP) / LOSS_CLIP, noisy
    noise_std: float  # of each coordinate above (summed over sites: in quadrature)

    @classmethod
    def release(
        cls, hist: ScoreHistogram, *, noise_multiplier: float, models: int = 1
    ) -> NoisyEvaluation:
        """The noisy release of a fine validation histogram (see the module docstring)."""
        if noise_multiplier <= 0 or models < 1:
            raise ValueError("A metric release needs a positive noise multiplier.")
        coarse = coarsen(hist)
        std = noise_multiplier * SENSITIVITY * math.sqrt(models)
        noise = np.random.default_rng().normal(0.0, std, 2 * COARSE_BINS + 1)  # OS entropy
        return cls(
            coarse.positives.astype(np.float64) + noise[:COARSE_BINS],
            coarse.negatives.astype(np.float64) + noise[COARSE_BINS:-1],
            clipped_loss_units(hist) + float(noise[-1]),
            std,
        )

    def __add__(self, other: NoisyEvaluation) -> NoisyEvaluation:
        return NoisyEvaluation(
            self.positives + other.positives,
            self.negatives + other.negatives,
            self.loss_units + other.loss_units,
            math.hypot(self.noise_std, other.noise_std),
        )

    def histogram(self) -> ScoreHistogram:
        """The noisy counts as a histogram, each bin's scores at its midpoint (post-processing),
        every count within ``DENOISE_SDS`` noise deviations of 0 set to 0 (:func:`denoised`)."""
        positives, negatives = denoised(self.positives, self.negatives, self.noise_std)
        midpoints = binning_of(COARSE_BINS).midpoints()
        return ScoreHistogram(positives, negatives, (positives + negatives) * midpoints)

    def plotted(self) -> ScoreHistogram:
        """Counts rounded and clamped to ≥ 0, for plots and the run's histogram file (figures are
        computed from the unclamped counts)."""
        positives = np.maximum(np.rint(self.positives), 0).astype(np.int64)
        negatives = np.maximum(np.rint(self.negatives), 0).astype(np.int64)
        midpoints = binning_of(COARSE_BINS).midpoints()
        return ScoreHistogram(positives, negatives, (positives + negatives) * midpoints)

    def images(self) -> float:
        """The noisy image count (clamped to ≥ 1 so that a mean stays defined)."""
        return max(float(self.positives.sum() + self.negatives.sum()), 1.0)

    def site_metrics(self, threshold: float) -> dict[str, float]:
        """A site's figures from its own noisy release: AUC, the figures at ``threshold``, the
        image and positive counts, the mean clipped loss."""
        figures = pooled_metrics(self.histogram(), threshold)
        loss = max(self.loss_units, 0.0) * LOSS_CLIP / self.images()
        shown = (*protocol.CLASSIFICATION_METRICS, protocol.PRECISION)
        return {
            **{key: figures[key] for key in shown if key in figures},
            protocol.LOSS: loss,
            protocol.NUM_EXAMPLES: round(self.images()),
            protocol.POSITIVES: max(round(float(self.positives.sum())), 0),
        }

    def to_lists(self) -> dict[str, list[float]]:
        """The noisy counts under their message keys (the reply's histogram part)."""
        return {
            protocol.DP_HIST_POSITIVES: [float(v) for v in self.positives],
            protocol.DP_HIST_NEGATIVES: [float(v) for v in self.negatives],
        }

    def scalars(self) -> dict[str, float]:
        """The noisy loss sum and the noise's standard deviation (the reply's scalar part)."""
        return {
            protocol.DP_LOSS_UNITS: float(self.loss_units),
            protocol.DP_NOISE_STD: float(self.noise_std),
        }

    @classmethod
    def from_metrics(cls, values: Mapping[str, Any]) -> NoisyEvaluation:
        """Read a release back; a ValueError that says what is wrong with a malformed one."""
        positives = np.asarray(values[protocol.DP_HIST_POSITIVES], dtype=np.float64)
        negatives = np.asarray(values[protocol.DP_HIST_NEGATIVES], dtype=np.float64)
        std, loss = float(values[protocol.DP_NOISE_STD]), float(values[protocol.DP_LOSS_UNITS])
        if positives.shape != (COARSE_BINS,) or negatives.shape != (COARSE_BINS,):
            raise ValueError(f"A noisy histogram has {COARSE_BINS} bins of each label.")
        finite = np.isfinite(positives).all() and np.isfinite(negatives).all()
        if not (finite and math.isfinite(loss) and math.isfinite(std) and std > 0):
            raise ValueError("A noisy histogram holds non-finite values or no noise.")
        return cls(positives, negatives, loss, std)


def denoised(
    positives: np.ndarray, negatives: np.ndarray, noise_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy counts with every count below ``DENOISE_SDS`` × ``noise_std`` set to 0 (hard
    thresholding, post-processing): most coarse bins hold none of one class, and their noise is
    what moves the AUC — a positive bin's noise below every negative counts as a misranked pair.
    Where that would leave a class with no count at all (tiny validation sets), clamped at 0
    instead: biased, but never a negative count, whose figures (an ECE of 2.5) mean nothing.

    Neither clamping nor leaving them: clamping at 0 biases every empty bin upwards (40 empty bins
    pulled a pooled AUC of 0.94 to 0.84 at 1 image of noise per bin, 180 images), and unclamped
    counts are unbiased but keep all the noise. PneumoniaMNIST's 3 validation sites at ε_m = 4,
    the final release (σ 1.53): mean |Δ AUC| 0.0176 unclamped, 0.0455 clamped, 0.0087 with this
    (bias −0.011, −0.046, −0.000; 200 draws); bench/metric_privacy.py."""
    if noise_std <= 0:
        return positives, negatives
    floor = DENOISE_SDS * noise_std
    kept = [np.where(counts > floor, counts, 0.0) for counts in (positives, negatives)]
    if not (kept[0].sum() > 0 and kept[1].sum() > 0):
        return np.maximum(positives, 0.0), np.maximum(negatives, 0.0)
    return kept[0], kept[1]


def exact_release(hist: ScoreHistogram) -> NoisyEvaluation:
    """A site's exact histogram (``metrics = "coarse"``) in the form of a release without noise,
    so that it sums with noisy ones (its loss unknown: 0)."""
    coarse = coarsen(hist)
    return NoisyEvaluation(
        coarse.positives.astype(np.float64), coarse.negatives.astype(np.float64), 0.0, 0.0
    )


def coarsen(hist: ScoreHistogram) -> ScoreHistogram:
    """A fine logit histogram merged into the coarse bins (exact: every coarse edge is a fine
    edge); a coarse one as it is."""
    if hist.bins == COARSE_BINS:
        return hist
    if hist.binning.name != "logit":
        raise ValueError("Only fedscan's logit-binned histograms merge into coarse bins.")
    coarse = binning_of(COARSE_BINS)
    starts = hist.binning.logit_edges[:-1]
    target = np.clip(np.searchsorted(coarse.logit_edges, starts, side="right") - 1, 0, None)
    merged = [
        np.bincount(target, weights=values, minlength=COARSE_BINS)
        for values in (hist.positives, hist.negatives, hist.score_sums)
    ]
    return ScoreHistogram(merged[0].astype(np.int64), merged[1].astype(np.int64), merged[2])


def clipped_loss_units(hist: ScoreHistogram) -> float:
    """Σ over images of min(binary cross-entropy, LOSS_CLIP) / LOSS_CLIP, each image's score at
    its fine bin's midpoint (0.005 in logit from its own: at most 0.005 of loss per image)."""
    midpoints = hist.binning.midpoints()
    with np.errstate(divide="ignore"):
        positive_loss = np.minimum(-np.log(midpoints), LOSS_CLIP)
        negative_loss = np.minimum(-np.log1p(-midpoints), LOSS_CLIP)
    total = (hist.positives * positive_loss).sum() + (hist.negatives * negative_loss).sum()
    return float(total) / LOSS_CLIP


def pooled_noisy(
    evaluations: Sequence[NoisyEvaluation | ScoreHistogram], rule: str | float
) -> tuple[dict[str, float], NoisyEvaluation, float]:
    """The pooled figures of releases (noisy ones, and exact histograms of sites under
    ``metrics = "coarse"``), summed, at the threshold ``rule`` (a run's operating point, or a
    threshold) on the sum; the sum; that threshold. The AUC's interval widened for the noise."""
    releases = [
        found if isinstance(found, NoisyEvaluation) else exact_release(found)
        for found in evaluations
    ]
    first, *rest = releases
    total = sum(rest, first)
    hist = total.histogram()
    threshold = operating_threshold(hist, rule) if isinstance(rule, str) else rule
    figures = pooled_metrics(hist, threshold)
    low, high = noisy_auc_interval(total)
    figures.update({"auc-ci-low": low, "auc-ci-high": high, "noise-std": total.noise_std})
    figures.update(raw_counts(total.positives, total.negatives))
    return figures, total, threshold


def raw_counts(positives: np.ndarray, negatives: np.ndarray) -> dict[str, float]:
    """The image counts of noisy sums as they were released (unbiased; the thresholded counts
    that give the figures drop the small ones)."""
    return {
        "n": float(positives.sum() + negatives.sum()),
        "positives": float(positives.sum()),
        "negatives": float(negatives.sum()),
    }


def noisy_auc_interval(total: NoisyEvaluation) -> tuple[float, float]:
    """Hanley–McNeil's 95 % interval of the AUC, widened by the AUC's spread when the summed noise
    is drawn again (a parametric bootstrap; seeded: the report is reproducible)."""
    hist = total.histogram()
    value = auc(hist)
    positives, negatives = float(hist.positives.sum()), float(hist.negatives.sum())
    low, high = auc_confidence_interval(value, max(int(positives), 1), max(int(negatives), 1))
    if math.isnan(value):
        return low, high
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(_BOOTSTRAP_DRAWS):
        noise = rng.normal(0.0, total.noise_std, (2, COARSE_BINS))
        again = NoisyEvaluation(
            hist.positives + noise[0], hist.negatives + noise[1], 0.0, total.noise_std
        )
        draws.append(auc(again.histogram()))
    noise_sd = float(np.nanstd(draws))
    sampling = (high - low) / (2 * _Z95)
    half = _Z95 * math.hypot(sampling, noise_sd) + tied_share(hist) / 2
    return max(0.0, value - half), min(1.0, value + half)


def tied_share(hist: ScoreHistogram) -> float:
    """The share of (positive, negative) pairs in the same bin, whose order the bins hide: the
    AUC counts each one half, the images' own scores anywhere from 0 to 1. A model whose scores
    lie within a narrow band ties most pairs in 26 bins (the demo's: −0.09 of AUC at any budget,
    bench/metric_privacy.py), so the interval includes ± half of it."""
    positives, negatives = np.maximum(hist.positives, 0.0), np.maximum(hist.negatives, 0.0)
    total = float(positives.sum() * negatives.sum())
    return float((positives * negatives).sum() / total) if total > 0 else 0.0
