"""Shamir sharing on GF(2^521 - 1): seeded property loops (any t shares reconstruct, fewer do
not), tiny exact cases, and the shares of two secrets drawn alike."""

from __future__ import annotations

import random

import pytest
from scipy.stats import chi2_contingency

from fedscan.common.secagg import shamir
from fedscan.common.secagg.shamir import PRIME, Share

SUBSETS_PER_CASE = 6
ALPHA = 1e-6  # a chance failure of a statistical check: once in a million runs


@pytest.mark.parametrize("seed", range(60))
def test_any_threshold_shares_reconstruct_the_secret(seed: int) -> None:
    # Prepare
    rng = random.Random(seed)
    count = rng.randint(1, 12)
    threshold = rng.randint(1, count)
    secret = rng.getrandbits(256)
    # Execute
    shares = shamir.split(secret, threshold=threshold, count=count)
    # Assert
    assert [share.x for share in shares] == list(range(1, count + 1))
    for _ in range(SUBSETS_PER_CASE):
        subset = rng.sample(shares, rng.randint(threshold, count))
        assert shamir.reconstruct(subset, threshold=threshold) == secret
        assert shamir.interpolate_at_zero(subset) == secret


@pytest.mark.parametrize("seed", range(60))
def test_fewer_than_threshold_shares_fail_or_give_another_value(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(2, 12)
    threshold = rng.randint(2, count)
    secret = rng.getrandbits(256)
    shares = shamir.split(secret, threshold=threshold, count=count)
    for _ in range(SUBSETS_PER_CASE):
        subset = rng.sample(shares, rng.randint(1, threshold - 1))
        with pytest.raises(ValueError, match="cannot reconstruct"):
            shamir.reconstruct(subset, threshold=threshold)
        # Wrong with probability 1 - 1/PRIME: the polynomial's other coefficients are uniform.
        assert shamir.interpolate_at_zero(subset) != secret


def test_the_shares_of_two_secrets_are_drawn_alike() -> None:
    # Any t - 1 shares are uniform whatever the secret: bucket the top bits of the first two
    # shares of 0 and of 2^256 - 1, threshold 3, and compare the two histograms.
    buckets = 8
    counts = []
    for secret in (0, 2**256 - 1):
        histogram = [0] * buckets
        for _ in range(800):
            for share in shamir.split(secret, threshold=3, count=5)[:2]:
                histogram[share.y * buckets // PRIME] += 1
        counts.append(histogram)
    assert chi2_contingency(counts).pvalue > ALPHA
    assert min(min(row) for row in counts) > 0


def test_threshold_one_shares_are_the_secret_itself() -> None:
    assert shamir.split(7, threshold=1, count=3) == [Share(1, 7), Share(2, 7), Share(3, 7)]


def test_lagrange_weights_of_two_points() -> None:
    # f(0) = 2 f(1) - f(2) for a line.
    assert shamir.lagrange_weights([1, 2]) == [2, PRIME - 1]
    assert shamir.combine([5 + 3, 5 + 6], [2, PRIME - 1]) == 5  # f(x) = 5 + 3x


@pytest.mark.parametrize(
    ("secret", "threshold", "count"), [(-1, 1, 1), (PRIME, 1, 1), (1, 0, 3), (1, 4, 3)]
)
def test_split_refuses_bad_arguments(secret: int, threshold: int, count: int) -> None:
    with pytest.raises(ValueError):
        shamir.split(secret, threshold=threshold, count=count)


def test_interpolation_refuses_repeated_or_zero_points() -> None:
    with pytest.raises(ValueError, match="distinct"):
        shamir.interpolate_at_zero([Share(1, 2), Share(1, 3)])
    with pytest.raises(ValueError, match="0 < x"):
        Share(0, 1)
    with pytest.raises(ValueError, match="0 <= y"):
        Share(1, PRIME)
