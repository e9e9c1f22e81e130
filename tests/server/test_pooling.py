"""The round pool's figures: the stored threshold by the run's rule, the Platt map, and the
intervals of DP releases."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common import protocol
from fedscan.common.metrics.binning import COARSE_BINS
from fedscan.common.metrics.calibration import Calibration, recalibration
from fedscan.common.metrics.histogram import ScoreHistogram, youden_threshold
from fedscan.common.metrics.private import NoisyEvaluation, coarsen
from fedscan.common.metrics.private_tasks import NoisyOverlap
from fedscan.common.metrics.segmentation import COUNT_KEYS, OverlapCounts, dice_interval
from fedscan.server.pooling import RoundPool


def _site_lists(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(rng.normal(-1, 1.5, n) + 2 * labels)))
    return {"sensitivity": 0.5, **ScoreHistogram.of(scores, labels).to_lists()}


@pytest.mark.parametrize("rule", ["youden", "sensitivity:0.9"])
def test_the_pool_stores_the_threshold_of_its_rule_and_the_map_of_the_summed_histogram(
    rule: str,
) -> None:
    # Prepare
    pool = RoundPool(operating_point=rule)
    sites = {"a": _site_lists(1, 400), "b": _site_lists(2, 250)}
    total = ScoreHistogram.from_lists(sites["a"]) + ScoreHistogram.from_lists(sites["b"])
    # Execute
    for name, metrics in sites.items():
        assert pool.take(name, metrics) is None
    pooled, threshold, document = pool.close(650)
    # Assert
    assert pooled is not None and document is not None and threshold is not None
    if rule == "youden":
        assert threshold == youden_threshold(total)
    else:
        assert pooled["sensitivity"] >= 0.9
        assert threshold > 0 and pooled["specificity"] > 0
    assert Calibration.from_json(document["calibration"]) == recalibration(total)
    assert pooled["ece-calibrated"] < pooled["ece"]


def test_dp_releases_a_coarse_site_and_a_withheld_one_pool_together() -> None:
    # Prepare: one site's DP release, one site's exact coarse histogram, one site withholding
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    fine = ScoreHistogram.of(1 / (1 + np.exp(-(rng.normal(-1, 1, 300) + 2 * labels))), labels)
    noisy = NoisyEvaluation.release(fine, noise_multiplier=1.0)
    pool = RoundPool()
    # Execute
    problems = [
        pool.take("dp", {**noisy.to_lists(), **noisy.scalars()}),
        pool.take("coarse", dict(coarsen(fine).to_lists())),
        pool.take("none", {"metrics-withheld": 1, "num-examples": 0}),
    ]
    pooled, threshold, document = pool.close(600)
    # Assert
    assert problems == [None, None, None]
    assert (
        pooled is not None and document is not None and set(document["sites"]) == {"dp", "coarse"}
    )
    assert pooled["noise-std"] == pytest.approx(noisy.noise_std)  # the exact site adds no noise
    assert pooled["auc-ci-low"] <= pooled["auc"] <= pooled["auc-ci-high"]
    spread = noisy.noise_std * (2 * COARSE_BINS) ** 0.5  # of the noisy site's image count
    assert abs(pooled["n"] - 2 * fine.positives.sum() - 2 * fine.negatives.sum()) < 5 * spread


def test_per_class_auc_intervals_of_dp_releases_are_widened_for_the_noise_and_cover() -> None:
    from fedscan.common.metrics.classwise import ClassEvidence, pooled_class_metrics
    from fedscan.common.metrics.private_tasks import NoisyClassEvidence
    from fedscan.common.tasks import MULTICLASS, LabelScheme

    # Prepare: three sites of 150 images, three classes, a model that ranks them fairly well
    scheme = LabelScheme(MULTICLASS, ("a", "b", "c"))
    rng = np.random.default_rng(4)
    sites = []
    for _ in range(3):
        labels = rng.integers(0, 3, 150)
        logits = rng.normal(0, 1, (150, 3)) + 1.5 * np.eye(3)[labels]
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        sites.append(ClassEvidence.of(probabilities, labels, scheme))
    exact = pooled_class_metrics(sum(sites[1:], sites[0]))["classes"]
    covered, widths = {name: 0 for name in scheme.classes}, []
    for _ in range(40):
        pool = RoundPool(scheme=scheme)
        for i, found in enumerate(sites):
            noisy = NoisyClassEvidence.release(found, noise_multiplier=1.5)
            assert pool.take(f"s{i}", {**noisy.to_lists(), "dp-noise-std": noisy.noise_std}) is None
        pooled, _, _ = pool.close(450)
        assert pooled is not None
        for name in scheme.classes:
            found = pooled["classes"][name]
            covered[name] += found["auc-ci-low"] <= exact[name]["auc"] <= found["auc-ci-high"]
            widths.append(found["auc-ci-high"] - found["auc-ci-low"])
    # Assert: each class's interval covers its exact AUC (95 % nominal; ≥ 34 of 40 fails with
    # p < 0.01), and it is wider than Hanley–McNeil's alone on the exact counts
    assert min(covered.values()) >= 34, covered
    sampling = min(e["auc-ci-high"] - e["auc-ci-low"] for e in exact.values())
    assert min(widths) > sampling


def _overlap_release(counts: OverlapCounts, images: int, pixels: int) -> dict:
    noisy = NoisyOverlap.release(counts, images, pixels=pixels, noise_multiplier=1.5)
    return {**noisy.to_lists(), protocol.DP_NOISE_STD: noisy.noise_std}


def test_a_dp_released_dice_gets_an_interval_for_the_noise_that_covers_the_exact_one() -> None:
    # Prepare: 3 sites × 70 images of 64², structures covering ~3 % of each (as the demo's)
    pixels, truth = 64 * 64, 70 * 64 * 64 * 0.03
    exact = OverlapCounts(0.8 * truth, 0.95 * truth, truth)
    covered, widths = 0, []
    # Execute
    for _ in range(60):
        pool = RoundPool(pixels=pixels)
        for name in "abc":
            assert pool.take(name, _overlap_release(exact, 70, pixels)) is None
        pooled, _, _ = pool.close(210)
        assert pooled is not None
        covered += pooled["dice-ci-low"] <= exact.dice <= pooled["dice-ci-high"]
        widths.append(pooled["dice-ci-high"] - pooled["dice-ci-low"])
    # Assert: 95 % nominal (≥ 51 of 60 fails by chance with p < 0.01); the noise is not small here
    assert covered >= 51
    assert float(np.median(widths)) > 0.2
    exact_pool = RoundPool(pixels=pixels)
    assert exact_pool.take("a", dict(zip(COUNT_KEYS, (1.0, 2.0, 2.0), strict=True))) is None
    pooled, _, _ = exact_pool.close(1)
    assert pooled is not None and "dice-ci-low" not in pooled  # exact counts: no interval


def test_the_dice_interval_narrows_to_the_dice_as_the_noise_vanishes() -> None:
    counts = OverlapCounts(800.0, 1000.0, 900.0)
    sums = (counts.intersection, counts.predicted, counts.truth)
    low, high = dice_interval(sums, 1e-3)
    assert low == pytest.approx(counts.dice, abs=1e-5)
    assert high == pytest.approx(counts.dice, abs=1e-5)
    wide = dice_interval(sums, 300.0)
    assert wide[0] < counts.dice < wide[1]
    assert dice_interval(sums, 5000.0) == (0.0, 1.0)  # the sums drown: nothing to read
