"""Pooled metrics from summed score histograms against direct computations on the pooled scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedscan.common.metrics.classification import binary_metrics
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    at_threshold,
    auc,
    auc_confidence_interval,
    expected_calibration_error,
    youden_threshold,
)


def direct_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann–Whitney: the fraction of (positive, negative) pairs ordered correctly, ties one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def direct_ece(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    index = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(scores[members].mean() - labels[members].mean())
    return total / scores.size


@pytest.mark.parametrize("seed", range(8))
def test_pooled_auc_and_ece_from_site_histograms_match_the_pooled_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sites = int(rng.integers(2, 6))
    scores, labels, pooled = [], [], ScoreHistogram.empty()
    for _ in range(sites):  # sites differ in size, prevalence and score distribution
        n = int(rng.integers(20, 400))
        y = (rng.random(n) < rng.uniform(0.1, 0.7)).astype(int)
        s = 1 / (
            1 + np.exp(-(rng.normal(0, 1, n) + y * rng.uniform(0.3, 2.5) + rng.normal(0, 0.5)))
        )
        scores.append(s)
        labels.append(y)
        pooled = pooled + ScoreHistogram.of(s, y)
    all_scores, all_labels = np.concatenate(scores), np.concatenate(labels)
    assert auc(pooled) == pytest.approx(direct_auc(all_scores, all_labels), abs=0.002)
    assert expected_calibration_error(pooled) == pytest.approx(
        direct_ece(all_scores, all_labels), abs=1e-9
    )
    threshold = youden_threshold(pooled)
    direct = binary_metrics(all_labels, all_scores, threshold=threshold)
    for key in ("accuracy", "sensitivity", "specificity", "f1"):
        assert at_threshold(pooled, threshold)[key] == pytest.approx(direct[key], abs=1e-9)


def test_averaging_site_aucs_is_not_the_pooled_auc() -> None:
    # Two sites, each perfectly ranked, but site B's scores are all higher: pooled ranking is poor.
    a = ScoreHistogram.of(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]))
    b = ScoreHistogram.of(np.array([0.6, 0.7, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert auc(a) == auc(b) == 1.0
    assert auc(a + b) == pytest.approx(0.75)


def test_hanley_mcneil_interval_narrows_with_more_cases() -> None:
    small = auc_confidence_interval(0.85, 20, 20)
    large = auc_confidence_interval(0.85, 500, 500)
    assert small[0] < large[0] < 0.85 < large[1] < small[1]
    assert all(math.isnan(v) for v in auc_confidence_interval(0.85, 0, 10))


def test_histograms_round_trip_through_message_lists() -> None:
    hist = ScoreHistogram.of(np.array([0.05, 0.95, 0.5]), np.array([0, 1, 1]))
    again = ScoreHistogram.from_lists(hist.to_lists())
    assert np.array_equal(again.positives, hist.positives) and np.allclose(
        again.score_sums, hist.score_sums
    )
    with pytest.raises(ValueError):
        ScoreHistogram.from_lists({"hist-pos": [1], "hist-neg": [1, 2], "hist-score-sum": [0.1]})
