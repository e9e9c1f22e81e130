"""The DP metric release: coarse bins merged exactly, the clipped loss, unbiased noisy sums, and a
pooled AUC interval that covers the exact pooled AUC."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common import protocol
from fedscan.common.metrics.binning import COARSE_BINS
from fedscan.common.metrics.histogram import ScoreHistogram, auc, pooled_metrics
from fedscan.common.metrics.private import (
    LOSS_CLIP,
    SENSITIVITY,
    NoisyEvaluation,
    clipped_loss_units,
    coarsen,
    denoised,
    exact_release,
    pooled_noisy,
    tied_share,
)


def _site(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    logits = np.where(labels, rng.normal(1.5, 1.2, n), rng.normal(-1.5, 1.2, n))
    return 1 / (1 + np.exp(-logits)), labels


def test_coarse_bins_are_unions_of_fine_bins() -> None:
    scores, labels = _site(0)
    coarse = coarsen(ScoreHistogram.of(scores, labels))
    direct = ScoreHistogram.of(scores, labels, bins=COARSE_BINS)
    assert np.array_equal(coarse.positives, direct.positives)
    assert np.array_equal(coarse.negatives, direct.negatives)
    assert np.allclose(coarse.score_sums, direct.score_sums)


def test_the_clipped_loss_is_within_the_fine_bins_resolution() -> None:
    scores, labels = _site(1)
    scores[:3] = [1e-12, 1 - 1e-12, 0.5]  # a confident mistake is clipped
    direct = np.where(labels, -np.log(scores), -np.log1p(-scores))
    expected = np.minimum(direct, LOSS_CLIP).sum() / LOSS_CLIP
    found = clipped_loss_units(ScoreHistogram.of(scores, labels))
    assert abs(found - expected) * LOSS_CLIP <= 0.005 * len(scores)


def test_the_noise_has_the_stated_spread_and_the_sums_no_bias() -> None:
    scores, labels = _site(2)
    hist = ScoreHistogram.of(scores, labels)
    draws = [NoisyEvaluation.release(hist, noise_multiplier=2.0) for _ in range(400)]
    positives = np.stack([d.positives for d in draws])
    truth = coarsen(hist).positives
    assert draws[0].noise_std == pytest.approx(2.0 * SENSITIVITY)
    assert np.std(positives - truth) == pytest.approx(2.0 * SENSITIVITY, rel=0.05)
    assert abs(np.mean(positives.sum(axis=1)) - truth.sum()) < 4 * 2.0 * SENSITIVITY * 5.1 / 20


def test_without_noise_the_pooled_figures_are_the_coarse_histograms() -> None:
    sites = [ScoreHistogram.of(*_site(seed)) for seed in range(3)]
    figures, _, threshold = pooled_noisy([exact_release(h) for h in sites], "youden")
    exact = pooled_metrics(sum((coarsen(h) for h in sites[1:]), coarsen(sites[0])), threshold)
    assert figures["auc"] == pytest.approx(exact["auc"])
    coarse = sum((coarsen(h) for h in sites[1:]), coarsen(sites[0]))
    assert figures["auc-ci-low"] == pytest.approx(exact["auc-ci-low"] - tied_share(coarse) / 2)
    assert figures["sensitivity"] == pytest.approx(exact["sensitivity"])


def test_the_widened_interval_covers_the_exact_pooled_auc() -> None:
    sites = [ScoreHistogram.of(*_site(seed, n=180)) for seed in range(3)]
    exact = auc(sum(sites[1:], sites[0]))  # the fine bins: what no noise and no coarsening give
    covered = 0
    for _ in range(60):
        released = [NoisyEvaluation.release(h, noise_multiplier=1.5) for h in sites]
        figures, _, _ = pooled_noisy(released, "youden")
        covered += figures["auc-ci-low"] <= exact <= figures["auc-ci-high"]
    assert covered >= 51  # 95 % nominal: ≥ 85 % of 60 fails by chance with p < 0.01


def test_reading_small_noisy_counts_as_zero_nearly_halves_the_error_of_a_sharp_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a model like PneumoniaMNIST's (AUC ≈ 0.99): most bins hold one class or none
    rng = np.random.default_rng(5)
    sites = []
    for _ in range(3):
        labels = rng.random(175) < 0.74
        logits = np.where(labels, rng.normal(4.0, 2.0, 175), rng.normal(-2.5, 1.5, 175))
        sites.append(ScoreHistogram.of(1 / (1 + np.exp(-logits)), labels))
    exact = auc(sum(sites[1:], sites[0]))
    # The releases' noise seeded: drawn from OS entropy, 40 runs of this test gave error ratios
    # 0.42-0.69 and bias ratios 0.32-0.65; one CI-like run failed at 0.702 of the 0.7 bound.
    noise = np.random.default_rng(0)
    monkeypatch.setattr(np.random, "default_rng", lambda *_: noise)
    raw_errors, errors = [], []
    for _ in range(200):
        first, *rest = [NoisyEvaluation.release(h, noise_multiplier=1.5) for h in sites]
        total = sum(rest, first)
        raw = ScoreHistogram(total.positives, total.negatives, np.zeros(COARSE_BINS))
        raw_errors.append(auc(raw) - exact)
        errors.append(pooled_noisy([total], "youden")[0]["auc"] - exact)
    # Assert: about half the error, less bias (data seeds 0-5, 200 draws each: 0.41-0.58 of the
    # mean error, 0.2-0.52 of the bias, which is -0.017 to -0.022 unthresholded)
    assert np.mean(np.abs(errors)) < 0.7 * np.mean(np.abs(raw_errors))
    assert abs(np.mean(errors)) < 0.75 * abs(np.mean(raw_errors))


def test_denoising_keeps_a_class_it_would_otherwise_erase() -> None:
    positives, negatives = np.array([0.0, 3.0, 40.0]), np.array([2.5, 1.0, -1.0])
    kept = denoised(positives, negatives, noise_std=2.0)  # clamped at 0 instead
    assert kept[0].tolist() == [0.0, 3.0, 40.0] and kept[1].tolist() == [2.5, 1.0, 0.0]
    kept = denoised(positives, np.array([9.0, 1.0, -1.0]), noise_std=2.0)
    assert kept[0].tolist() == [0.0, 0.0, 40.0] and kept[1].tolist() == [9.0, 0.0, 0.0]


def test_a_malformed_release_is_refused() -> None:
    release = NoisyEvaluation.release(ScoreHistogram.of(*_site(3)), noise_multiplier=1.0)
    values = {**release.to_lists(), **release.scalars()}
    NoisyEvaluation.from_metrics(values)
    with pytest.raises(ValueError, match="bins"):
        NoisyEvaluation.from_metrics({**values, protocol.DP_HIST_POSITIVES: [1.0] * 3})
    with pytest.raises(ValueError, match="no noise"):
        NoisyEvaluation.from_metrics({**values, protocol.DP_NOISE_STD: 0.0})
