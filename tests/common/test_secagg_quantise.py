"""Quantisation mod 2^k: the overflow rule on exact small numbers, the extreme sums, and the
dequantised weighted sum within n * step of the plain one (seeded property loop)."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common.secagg import Quantiser
from fedscan.common.secagg.quantise import clip, stochastic_round


def _sum(encodings: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(encodings[0])
    for encoding in encodings:
        total += encoding  # wraps mod 2^64, like the masked sum
    return total


def test_the_modulus_follows_the_overflow_rule() -> None:
    # 3 sites * weight 1 * 2^2 steps = 12 < 2^4: 4 bits of magnitude and a sign bit.
    assert Quantiser(1.0, max_weight=1, precision_bits=2, sites=3).bits == 5
    assert Quantiser(1.0, max_weight=1, precision_bits=2, sites=4).bits == 6  # 16 needs 5 bits
    assert Quantiser(1.0, max_weight=2**20, precision_bits=20, sites=50).bits == 47


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_largest_possible_sum_does_not_wrap(sign: float) -> None:
    # Prepare: every site at the maximum weight, the whole clipping bound on one coordinate.
    quantiser = Quantiser(0.5, max_weight=3, precision_bits=4, sites=5)
    update = np.array([sign * 0.5, 0.0])
    # Execute
    weighted_sum, weights = quantiser.decode(_sum([quantiser.encode(update, 3)] * 5))
    # Assert: 5 sites * 3 * 0.5, exactly (on the grid, so rounding never moves it)
    assert weighted_sum.tolist() == [sign * 7.5, 0.0]
    assert weights == 15


@pytest.mark.parametrize("seed", range(30))
def test_dequantised_sum_is_within_the_bound_of_the_plain_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sites, dimension = int(rng.integers(1, 11)), int(rng.integers(1, 400))
    quantiser = Quantiser(
        float(rng.uniform(0.1, 5)),
        max_weight=1000,
        precision_bits=int(rng.integers(2, 20)),
        sites=sites,
    )
    updates = [rng.normal(scale=rng.uniform(0.01, 3), size=dimension) for _ in range(sites)]
    weights = [int(w) for w in rng.integers(1, 1001, size=sites)]
    encodings = [quantiser.encode(u, w) for u, w in zip(updates, weights, strict=True)]
    weighted_sum, weight_total = quantiser.decode(_sum(encodings))
    plain = sum(w * clip(u, quantiser.clip_bound) for u, w in zip(updates, weights, strict=True))
    assert weight_total == sum(weights)
    assert np.max(np.abs(weighted_sum - plain)) < quantiser.error_bound(sites)


def test_clipping_scales_into_the_l2_ball_and_leaves_small_updates_alone() -> None:
    assert clip(np.array([3.0, 4.0]), 1.0).tolist() == pytest.approx([0.6, 0.8])
    assert clip(np.array([0.3, 0.4]), 1.0).tolist() == [0.3, 0.4]


def test_stochastic_rounding_is_unbiased_and_within_one_step() -> None:
    values = np.full(200_000, 2.3)
    rounded = stochastic_round(values)
    assert set(np.unique(rounded).tolist()) == {2, 3}
    # The mean of 200 000 Bernoulli(0.3) draws: standard error 0.001; 6 of them is 1e-9 rare.
    assert abs(rounded.mean() - 2.3) < 0.006


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_weight": 2**40, "precision_bits": 20}, "2\\^52"),
        ({"max_weight": 2**30, "precision_bits": 20, "sites": 2**12}, "at most 54"),
        ({"clip_bound": float("nan")}, "clipping bound"),
        ({"max_weight": 0}, "positive"),
    ],
)
def test_settings_that_could_overflow_are_refused(settings: dict[str, float], message: str) -> None:
    arguments = {"clip_bound": 1.0, "max_weight": 10, "precision_bits": 8, "sites": 3} | settings
    with pytest.raises(ValueError, match=message):
        Quantiser(**arguments)


def test_weights_and_updates_are_checked() -> None:
    quantiser = Quantiser(1.0, max_weight=10, precision_bits=8, sites=3)
    with pytest.raises(ValueError, match="weight"):
        quantiser.encode(np.zeros(3), 11)
    with pytest.raises(ValueError, match="finite"):
        quantiser.encode(np.array([0.0, np.nan]), 1)
