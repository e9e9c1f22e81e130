"""The score bins of a histogram: equal steps in logit space, and fedscan 0.1's linear bins.

Linear bins lose a confident model: with 1 000 bins of width 0.001, a model whose scores are all
below 0.001 (logits under −6.9) puts every image in bin 0 and the pooled AUC reads 0.500 however
well it ranks them (measured: a local model of per-site AUC 0.954 and 0.952 pooled to exactly
0.500). Logit bins keep the same relative resolution at every confidence: steps of 0.01 in logit
between −16 and 16 (probabilities 1.1e-7 to 1 − 1.1e-7, which float64 scores resolve; 0.0025 wide
at 0.5), one open bin at each end, and the nine decile edges of the calibration bins inserted
exactly, so that merging fine bins into the ten calibration bins is exact. A binning is known by
its bin count alone — 3 210 for the logit bins, 1 000 for 0.1's linear ones — so histograms in old
run directories read back with the bins they were made with, and no message key changed.

Invariants: edges rise strictly from 0 to 1 (as probabilities) and from −∞ to +∞ (as logits);
:meth:`Binning.index` puts a score ``s`` in the bin ``i`` with ``edge[i] ≤ s < edge[i + 1]`` (the
top bin includes 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

LOGIT_LIMIT = 16.0  # beyond ±16 a sigmoid computed in float32 is already 0 or 1 − 1e-7
LOGIT_STEP = 0.01  # 0.0025 in probability at 0.5; 3 200 steps between the limits
CALIBRATION_BINS = 10  # equal-width probability bins of the expected calibration error
LEGACY_BINS = 1000  # fedscan 0.1: bins of width 0.001 in probability
COARSE_LOGIT_LIMIT = 8  # coarse bins (metric releases under DP): integer logits −8 … 8


def logit(probabilities: np.ndarray | float) -> np.ndarray:
    """log(p / (1 − p)) in float64; 0 → −∞ and 1 → +∞ (no warning)."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def sigmoid(logits: np.ndarray | float) -> np.ndarray:
    """1 / (1 + e^−z) in float64, without overflow; ±∞ → 1 and 0."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


@dataclass(frozen=True, eq=False)
class Binning:
    """Bin edges as probabilities (0 … 1) and as logits (−∞ … +∞)."""

    name: str
    edges: np.ndarray  # probabilities, bins + 1 of them, edges[0] = 0 and edges[-1] = 1
    logit_edges: np.ndarray

    @property
    def bins(self) -> int:
        return int(self.edges.size - 1)

    def index(self, scores: np.ndarray) -> np.ndarray:
        """The bin of each probability (clipped to [0, 1]); NaN is refused."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if np.isnan(scores).any():
            raise ValueError("Scores must be probabilities; found NaN (did training diverge?).")
        z = logit(np.clip(scores, 0.0, 1.0))
        return np.clip(np.searchsorted(self.logit_edges, z, side="right") - 1, 0, self.bins - 1)

    def nearest_edge(self, threshold: float) -> int:
        """The index of the edge nearest to ``threshold`` (exact when it is an edge)."""
        return int(np.argmin(np.abs(self.edges - float(threshold))))

    def midpoints(self) -> np.ndarray:
        """A probability strictly inside each bin (the sigmoid of the logit midpoint; for the open
        end bins, a point just inside)."""
        inner = np.clip(self.logit_edges, -LOGIT_LIMIT - 1, LOGIT_LIMIT + 1)
        return sigmoid((inner[:-1] + inner[1:]) / 2)


@cache
def logit_binning() -> Binning:
    grid = np.linspace(-LOGIT_LIMIT, LOGIT_LIMIT, round(2 * LOGIT_LIMIT / LOGIT_STEP) + 1)
    grid[np.argmin(np.abs(grid))] = 0.0
    deciles = logit(np.arange(1, CALIBRATION_BINS) / CALIBRATION_BINS)
    inner = np.union1d(grid, deciles)
    logits = np.concatenate([[-np.inf], inner, [np.inf]])
    edges = sigmoid(logits)
    return Binning("logit", edges, logits)


@cache
def linear_binning(bins: int = LEGACY_BINS) -> Binning:
    edges = np.arange(bins + 1) / bins
    return Binning("linear", edges, logit(edges))


@cache
def coarse_binning() -> Binning:
    """The bins of a released metric under DP (``[privacy] metrics``): steps of 1 in logit between
    −8 and 8 and the decile edges, each a fine logit edge (so merging fine bins into these is
    exact); 26 bins. A bin count is the noise's multiplier: 3 210 noisy bins would bury a site's
    70 validation images, 26 leave the pooled AUC within ≈ 0.01 (bench/metric_privacy.py)."""
    fine = logit_binning()
    targets = np.union1d(
        np.arange(-COARSE_LOGIT_LIMIT, COARSE_LOGIT_LIMIT + 1),
        logit(np.arange(1, CALIBRATION_BINS) / CALIBRATION_BINS),
    )
    picks = np.unique([int(np.argmin(np.abs(fine.logit_edges - t))) for t in targets])
    logits = np.concatenate([[-np.inf], fine.logit_edges[picks], [np.inf]])
    return Binning("coarse", sigmoid(logits), logits)


BINS = logit_binning().bins
COARSE_BINS = coarse_binning().bins


def binning_of(bins: int) -> Binning:
    """The binning of a histogram of ``bins`` bins: the logit bins for :data:`BINS`, the coarse ones
    for :data:`COARSE_BINS`, otherwise linear ones (fedscan 0.1's 1 000, or the finer ones a test
    compares with)."""
    if bins == COARSE_BINS:
        return coarse_binning()
    return logit_binning() if bins == BINS else linear_binning(bins)


def check_known(bins: int) -> None:
    """Refuse a bin count no fedscan release sends.

    Raises
    ------
    ValueError
        For any count but :data:`BINS`, :data:`COARSE_BINS` and :data:`LEGACY_BINS`: another
        program or damage.
    """
    if bins in (BINS, LEGACY_BINS, COARSE_BINS):
        return
    raise ValueError(
        f"A score histogram has {bins} bins; fedscan makes {BINS} (logit bins) or {COARSE_BINS} "
        f"(coarse logit bins, for metrics under DP) and reads "
        f"{LEGACY_BINS} (fedscan 0.1's linear bins). Run the same fedscan release at every site."
    )
