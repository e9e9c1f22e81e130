"""Pooled metrics from summed score histograms against direct computations on the pooled scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedscan.common.metrics.binning import LEGACY_BINS
from fedscan.common.metrics.classification import binary_metrics
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    at_threshold,
    auc,
    auc_confidence_interval,
    expected_calibration_error,
    sensitivity_threshold,
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


def _saturated_sites(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sites of a confident model: logits around ±12, some past ±15, each site ranking well but
    offset from the others (another scanner), as float64 probabilities (what predict returns)."""
    sites = []
    for _ in range(int(rng.integers(2, 6))):
        n = int(rng.integers(40, 400))
        y = (rng.random(n) < rng.uniform(0.1, 0.7)).astype(int)
        logits = rng.normal(-13, 1.5, n) + y * rng.uniform(1.5, 4) + rng.normal(0, 1.5)
        if rng.random() < 0.5:  # the confident-positive side: scores within 1e-6 of 1
            logits = -logits[::-1]
            y = 1 - y[::-1]
        sites.append((1 / (1 + np.exp(-logits)), y))
    return sites


@pytest.mark.parametrize("seed", range(8))
def test_pooled_metrics_of_saturated_scores_match_the_pooled_scores(seed: int) -> None:
    # Prepare
    sites = _saturated_sites(np.random.default_rng(100 + seed))
    all_scores = np.concatenate([s for s, _ in sites])
    all_labels = np.concatenate([y for _, y in sites])
    # Execute
    pooled = ScoreHistogram.empty()
    for scores, labels in sites:
        pooled = pooled + ScoreHistogram.of(scores, labels)
    # Assert: the ranking survives (a 0.001-wide first bin would hold every score of a site)
    assert auc(pooled) == pytest.approx(direct_auc(all_scores, all_labels), abs=0.002)
    assert expected_calibration_error(pooled) == pytest.approx(
        direct_ece(all_scores, all_labels), abs=1e-9
    )
    threshold = youden_threshold(pooled)
    assert 0 < threshold < 0.01 or 0.99 < threshold < 1  # a confident model's operating point
    direct = binary_metrics(all_labels, all_scores, threshold=threshold)
    for key in ("accuracy", "sensitivity", "specificity", "f1"):
        assert at_threshold(pooled, threshold)[key] == pytest.approx(direct[key], abs=1e-9)


def test_fedscan_0_1_linear_bins_lost_a_confident_model_and_still_read_back() -> None:
    # Prepare: a site that ranks well, every score below 0.001
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = 1 / (1 + np.exp(-(rng.normal(-12, 1, 300) + 2.5 * labels)))
    # Execute
    linear = ScoreHistogram.of(scores, labels, bins=LEGACY_BINS)
    logit = ScoreHistogram.of(scores, labels)
    again = ScoreHistogram.from_lists(linear.to_lists())
    # Assert
    assert auc(linear) == 0.5 and auc(again) == 0.5  # all ties: what 0.1 reported
    assert auc(logit) == pytest.approx(direct_auc(scores, labels), abs=0.002)
    assert auc(logit) > 0.9
    assert again.binning.name == "linear" and logit.binning.name == "logit"
    with pytest.raises(ValueError, match="different fedscan releases"):
        linear + logit
    with pytest.raises(ValueError, match="bins"):
        ScoreHistogram.from_lists(ScoreHistogram.of(scores, labels, bins=64).to_lists())


def test_a_target_sensitivity_threshold_keeps_that_sensitivity() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000)
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1.5, 2000) + 2 * labels)))
    hist = ScoreHistogram.of(scores, labels)
    threshold = sensitivity_threshold(hist, 0.9)
    sensitivity = float((scores[labels == 1] >= threshold).mean())
    assert 0.9 <= sensitivity < 0.9 + 5 / labels.sum()
    assert at_threshold(hist, threshold)["sensitivity"] == pytest.approx(sensitivity, abs=1e-12)
    with pytest.raises(ValueError, match="target sensitivity"):
        sensitivity_threshold(hist, 1.5)


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
