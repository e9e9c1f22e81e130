"""Platt recalibration from a pooled histogram: what it fits, what it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common.metrics.calibration import (
    Calibration,
    calibrated_ece,
    cross_fitted_ece,
    ece_floor,
    fit_platt,
    recalibration,
)
from fedscan.common.metrics.classification import rank_auc
from fedscan.common.metrics.histogram import ScoreHistogram, expected_calibration_error
from tests.common.test_histogram import direct_ece


def _overconfident(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from σ(z), reported as σ(2.5 z + 1): a DP model's over-sure, shifted scores."""
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return 1 / (1 + np.exp(-(2.5 * z + 1))), labels


@pytest.mark.parametrize("seed", range(4))
def test_platt_from_site_histograms_recovers_the_map_and_removes_the_error(seed: int) -> None:
    # Prepare: three sites' histograms of the same miscalibrated model
    rng = np.random.default_rng(seed)
    sites = [_overconfident(rng, int(rng.integers(500, 3000))) for _ in range(3)]
    pooled = ScoreHistogram.empty()
    for scores, labels in sites:
        pooled = pooled + ScoreHistogram.of(scores, labels)
    # Execute
    calibration = fit_platt(pooled)
    # Assert: σ(a·(2.5 z + 1) + b) = σ(z) needs a = 0.4, b = −0.4
    assert calibration.fitted
    assert calibration.slope == pytest.approx(0.4, abs=0.04)
    assert calibration.intercept == pytest.approx(-0.4, abs=0.1)
    scores = np.concatenate([s for s, _ in sites])
    labels = np.concatenate([y for _, y in sites])
    before = expected_calibration_error(pooled)
    after = calibrated_ece(pooled, calibration)
    assert before > 0.05 and after < 0.02
    assert after == pytest.approx(direct_ece(calibration.apply(scores), labels), abs=0.003)
    assert calibrated_ece(pooled, Calibration()) == pytest.approx(before, abs=1e-12)
    # A rising map: the ranking (and every decision at a mapped threshold) is unchanged
    assert rank_auc(labels, calibration.apply(scores)) == pytest.approx(rank_auc(labels, scores))


def test_too_few_cases_or_a_reversed_ranking_leave_the_scores_as_they_are() -> None:
    rng = np.random.default_rng(5)
    few = ScoreHistogram.of(rng.random(30), np.r_[np.ones(5), np.zeros(25)])
    assert not fit_platt(few).fitted and "needs 20 of each" in fit_platt(few).reason
    scores, labels = _overconfident(rng, 2000)
    reversed_ = fit_platt(ScoreHistogram.of(1 - scores, labels))
    assert not reversed_.fitted and "rank negatives above positives" in reversed_.reason
    assert np.allclose(reversed_.apply(scores), scores)


def test_a_map_round_trips_through_checkpoint_metadata_and_a_bad_one_is_refused() -> None:
    fitted = Calibration(0.41, -0.38)
    assert Calibration.from_json(fitted.to_json()) == fitted
    assert not Calibration.from_json(None).fitted
    with pytest.raises(ValueError, match="not a rising Platt map"):
        Calibration.from_json({"method": "platt", "slope": -1.0, "intercept": 0.0})


def test_the_ece_floor_is_what_a_calibrated_model_shows_at_that_size() -> None:
    # Prepare: calibrated scores (labels drawn from them), at two sizes
    rng = np.random.default_rng(9)
    floors, measured = {}, {}
    for n in (200, 20_000):
        scores = 1 / (1 + np.exp(-rng.normal(0, 2, n)))
        labels = (rng.random(n) < scores).astype(int)
        hist = ScoreHistogram.of(scores, labels)
        # Execute
        floors[n] = ece_floor(hist, Calibration())
        measured[n] = expected_calibration_error(hist)
    # Assert: small sets cannot show a small ECE; large ones can
    assert 0.03 < floors[200] < 0.09 and floors[20_000] < 0.01
    assert measured[200] < 2.5 * floors[200] and measured[20_000] < 2.5 * floors[20_000]


def test_a_map_that_would_raise_the_validation_ece_is_not_stored() -> None:
    # Prepare: the reliability of a no-DP demo run whose Platt fit (slope 7) raised the ten-bin ECE:
    # (score range, images, positives) per calibration bin
    rng = np.random.default_rng(0)
    parts = [(0.35, 0.4, 42, 15), (0.4, 0.5, 138, 55), (0.5, 0.56, 33, 33), (0.6, 0.63, 3, 3)]
    scores = np.concatenate([rng.uniform(low, high, n) for low, high, n, _ in parts])
    labels = np.concatenate(
        [rng.permutation(np.r_[np.ones(k), np.zeros(n - k)]) for _, _, n, k in parts]
    ).astype(int)
    hist = ScoreHistogram.of(scores, labels)
    # Execute
    fitted, stored = fit_platt(hist), recalibration(hist)
    # Assert
    assert fitted.fitted and calibrated_ece(hist, fitted) > expected_calibration_error(hist)
    assert not stored.fitted and "did not lower the validation ECE" in stored.reason
    assert calibrated_ece(hist, stored) == pytest.approx(expected_calibration_error(hist))


def test_a_site_recalibrating_on_its_own_images_fixes_a_shift_the_stored_map_cannot_see() -> None:
    # Prepare: the training sites' map fits their scores; another scanner shifts every score
    rng = np.random.default_rng(5)
    scores, labels = _overconfident(rng, 3000)
    stored = fit_platt(ScoreHistogram.of(scores, labels))
    logits = np.log(scores) - np.log1p(-scores)
    shifted = 1 / (1 + np.exp(-(logits + 2.0)))  # the other scanner: two logits brighter
    # Execute
    under_stored = expected_calibration_error(ScoreHistogram.of(stored.apply(shifted), labels))
    local = cross_fitted_ece(shifted, labels)
    # Assert: cross-fitted (no image scored by a map fitted on it), the local map removes it
    assert under_stored > 0.1 and local < 0.03
    assert cross_fitted_ece(shifted, labels) == local  # a fixed split: the figure repeats
