"""Membership-inference attacks as per-image scores: higher means "more likely a member".

- **Loss threshold** (Yeom et al. 2018): a model fits its training images better, so the score is
  the negated per-image loss; the ROC sweeps every threshold.
- **Offline LiRA** (Carlini et al. 2022, "offline" variant): shadow models are trained on random
  halves of a pool that holds the target images; for each image, a Gaussian N(μ, σ²) is fitted to
  its φ over the shadows that did *not* train on it (OUT), and the target model's φ is scored by
  the one-sided test "is it above what OUT models give": score = −log Pr[Z ≥ φ], Z ~ N(μ, σ²)
  (the log survival function keeps the strongest members apart where Pr[Z ≤ φ] rounds to 1).
  With few OUT shadows per image a per-image variance is noise, so one global variance is used,
  as the paper does: below :data:`MIN_OUT_FOR_OWN_VARIANCE` OUT shadows per image, σ² is the mean
  over images of their OUT variances. With a single OUT shadow per image no variance can be
  estimated; any one constant σ gives the same ranking (the score is monotone in φ − μ), so σ = 1.

Invariant: the attacks see scores and the shadows' membership bits only; the target images'
membership is never used to fit anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from fedscan.common.errors import DataError

# Carlini et al. use per-example variances from 64 shadow models on (32 OUT per example) and a
# global variance below that.
MIN_OUT_FOR_OWN_VARIANCE = 32


def loss_attack(losses: np.ndarray) -> np.ndarray:
    """Yeom et al.: the negated per-image loss (lower loss → more likely a member)."""
    return -np.asarray(losses, dtype=np.float64)


@dataclass(frozen=True)
class OutFit:
    """Per-image Gaussians of φ over the OUT shadows: means, standard deviations, OUT counts,
    and whether the deviation is the one global estimate."""

    mean: np.ndarray
    std: np.ndarray
    out_counts: np.ndarray
    global_variance: bool


def fit_out(shadow_phi: np.ndarray, shadow_in: np.ndarray) -> OutFit:
    """Fit N(μ_i, σ_i²) to image i's φ over the shadows that did not train on it.

    ``shadow_phi`` and ``shadow_in`` are S×N (shadows × images); every image needs at least one
    OUT shadow (:func:`fedscan.common.membership.shadows.shadow_splits` gives each S/2).
    """
    phi = np.asarray(shadow_phi, dtype=np.float64)
    out = ~np.asarray(shadow_in, dtype=bool)
    if phi.shape != out.shape or phi.ndim != 2:
        raise DataError("Shadow scores and memberships must both be shadows × images.")
    counts = out.sum(axis=0)
    if counts.size == 0 or counts.min() < 1:
        raise DataError("Every image needs at least one shadow model that did not train on it.")
    mean = np.where(out, phi, 0.0).sum(axis=0) / counts
    if counts.min() < 2:
        return OutFit(mean, np.ones_like(mean), counts, True)
    squares = np.where(out, (phi - mean) ** 2, 0.0).sum(axis=0)
    variance = squares / (counts - 1)
    if counts.min() < MIN_OUT_FOR_OWN_VARIANCE:
        pooled = float(variance.mean())
        return OutFit(mean, np.full_like(mean, np.sqrt(max(pooled, 1e-12))), counts, True)
    return OutFit(mean, np.sqrt(np.maximum(variance, 1e-12)), counts, False)


def lira_offline(target_phi: np.ndarray, fit: OutFit) -> np.ndarray:
    """The one-sided likelihood score of each image's target φ against its OUT Gaussian."""
    z = (np.asarray(target_phi, dtype=np.float64) - fit.mean) / fit.std
    return -norm.logsf(z)
