"""Federated feature standardisation for the classical models: sums and counts leave a site, never
features.

Each site sends Σx and Σx² over its training features (each value first
clipped to [−1, 1] and each vector to L2 norm C) and its count. Under DP both
sums get Gaussian noise of standard deviation σ_s·Δ, where Δ = √2·C bounds how
much one image can move the pair (‖x‖ ≤ C and ‖x²‖₂ ≤ max|xᵢ|·‖x‖ ≤ C): a
Gaussian mechanism with noise multiplier σ_s, which the site's ledger records
as release 0 of the run and its budget plans for from the start. The
coordinator adds the sites' sums: without noise, exactly the pooled mean and
standard deviation. Standardisation only re-parametrises a linear model, so a
noisy estimate costs conditioning, not expressiveness — as long as no scale
collapses: scales are kept at or above a floor set by C alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedscan.common.models.classical import ClassicalConfig
from fedscan.common.privacy import HistoryEntry

SCALE_FLOOR_SHARE = (
    0.1  # scales ≥ this × C/√d, the RMS value a vector of norm C spreads over d features
)


@dataclass(frozen=True)
class FeatureSums:
    """One site's contribution (or the sum of several)."""

    total: np.ndarray
    squares: np.ndarray
    count: int

    def __add__(self, other: FeatureSums) -> FeatureSums:
        return FeatureSums(
            self.total + other.total, self.squares + other.squares, self.count + other.count
        )


def stats_release(options: str) -> HistoryEntry:
    """The ledger entry of the statistics release (noise multiplier, sample rate 1, one step), as
    the run's classical settings ``options`` set it."""
    return (ClassicalConfig.parse(options).stats_noise, 1.0, 1)


def model_norm_bound(model_name: str, options: str, dimension: int) -> float:
    """C for a classical model by name (``hog-…`` or ``lbp-…``) and its run config ``classical``."""
    return norm_bound(model_name.split("-")[0], ClassicalConfig.parse(options), dimension)


def norm_bound(kind: str, config: ClassicalConfig, dimension: int) -> float:
    """An L2 bound every feature vector meets by construction, used as the clipping norm C.

    HOG: each L2-Hys block has norm ≤ 1, so √(blocks). LBP: each region's histogram sums to 1,
    so its norm is ≤ 1, and √(regions) overall.
    """
    if kind == "hog":
        return math.sqrt(dimension / (config.hog_orientations * config.hog_block**2))
    return float(config.lbp_grid)


def clip_rows(features: np.ndarray, clip_norm: float) -> np.ndarray:
    """Values into [−1, 1], then each row to L2 norm ≤ ``clip_norm``."""
    features = np.clip(features, -1.0, 1.0)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))


def sensitivity(clip_norm: float) -> float:
    return math.sqrt(2.0) * clip_norm


def site_sums(
    features: np.ndarray,
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> FeatureSums:
    """This site's sums; ``noise_multiplier`` 0 means no DP (exact sums)."""
    clipped = clip_rows(np.asarray(features, dtype=np.float64), clip_norm)
    total, squares = clipped.sum(axis=0), (clipped**2).sum(axis=0)
    if noise_multiplier > 0:
        rng = rng or np.random.default_rng()
        std = noise_multiplier * sensitivity(clip_norm)
        total = total + rng.normal(0.0, std, size=total.shape)
        squares = squares + rng.normal(0.0, std, size=squares.shape)
    return FeatureSums(total, squares, int(clipped.shape[0]))


def standardisation(parts: list[FeatureSums], *, clip_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) per feature over every site's images together, the deviation kept
    at or above the floor (a constant feature, or one whose estimate drowned in DP noise)."""
    pooled = parts[0]
    for part in parts[1:]:
        pooled = pooled + part
    count = max(pooled.count, 1)
    mean = pooled.total / count
    floor = SCALE_FLOOR_SHARE * clip_norm / math.sqrt(max(mean.shape[0], 1))
    deviation = np.sqrt(np.maximum(pooled.squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(deviation, floor).astype(np.float32)
