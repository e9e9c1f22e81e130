"""Pooled per-class figures against direct computations on the pooled per-image scores.

Each property runs 50 random trials with fixed seeds: sites differ in size, class mix and score
distribution; the sum of their objects must be the object of the concatenated data, and every figure
of that sum the figure computed directly from the concatenated scores, predictions or label maps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from fedscan.common.metrics.binning import BINS, logit_binning
from fedscan.common.metrics.classification import rank_auc
from fedscan.common.metrics.confusion import ConfusionCounts, LabelOverlaps
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    at_threshold,
    auc,
    expected_calibration_error,
    youden_threshold,
)
from fedscan.common.metrics.perclass import (
    CLASS_HIST_POSITIVES,
    ClassHistograms,
    class_metrics,
)

TRIALS = range(50)
AUC_TOLERANCE = 0.002  # as tests/common/test_histogram.py
# Ten times the default 1000 bins: with a rare class (a few positives) one same-bin pair moves the
# AUC by 0.5 / (P·N); the worst trial here is 0.0017 off at 1000 bins, too near the tolerance,
# and 0.0009 off at 10 000.
FINE_BINS = 10_000


def _classes(k: int) -> tuple[str, ...]:
    return tuple(f"finding-{i}" for i in range(k))


def _softmax_sites(rng: np.random.Generator, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sites of (N × K softmax rows, N class indices); the true class's logit is raised."""
    sites = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.integers(30, 300))
        targets = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))
        logits = rng.normal(0, 1, (n, k)) + rng.normal(0, 0.5, k)
        logits[np.arange(n), targets] += rng.uniform(0.2, 2.5)
        rows = np.exp(logits - logits.max(axis=1, keepdims=True))
        sites.append((rows / rows.sum(axis=1, keepdims=True), targets))
    return sites


def _sigmoid_sites(rng: np.random.Generator, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sites of (N × K sigmoid probabilities, N × K 0/1 labels), prevalence differing by site."""
    sites = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.integers(30, 300))
        targets = (rng.random((n, k)) < rng.uniform(0.05, 0.6, k)).astype(int)
        logits = rng.normal(0, 1, (n, k)) + targets * rng.uniform(0.2, 2.5, k)
        sites.append((1 / (1 + np.exp(-logits)), targets))
    return sites


def _pooled(
    sites: list[tuple[np.ndarray, np.ndarray]],
    build: Callable[[np.ndarray, np.ndarray], ClassHistograms],
) -> ClassHistograms:
    parts = [build(scores, targets) for scores, targets in sites]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _assert_same(a: ClassHistograms, b: ClassHistograms) -> None:
    assert a.classes == b.classes
    for key, value in a.to_arrays().items():
        if value.dtype.kind == "i":  # counts are exact; score sums add in another order
            assert np.array_equal(value, b.to_arrays()[key]), key
        else:
            assert np.allclose(value, b.to_arrays()[key], rtol=0, atol=1e-9), key


def _direct_ece(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    index = np.minimum((scores * bins).astype(int), bins - 1)
    gaps = [
        (index == b).sum() * abs(scores[index == b].mean() - labels[index == b].mean())
        for b in range(bins)
        if (index == b).any()
    ]
    return float(sum(gaps) / scores.size)


@pytest.mark.parametrize("seed", TRIALS)
def test_multiclass_histograms_pool_to_the_figures_of_the_pooled_scores(seed: int) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    names, sites = _classes(k), _softmax_sites(rng, k)
    probabilities = np.concatenate([s for s, _ in sites])
    targets = np.concatenate([t for _, t in sites])
    # Execute
    pooled = _pooled(sites, lambda s, t: ClassHistograms.of_multiclass(s, t, names, FINE_BINS))
    metrics = class_metrics(pooled)
    # Assert: the sum of the sites' histograms is the histogram of the concatenated images
    _assert_same(pooled, ClassHistograms.of_multiclass(probabilities, targets, names, FINE_BINS))
    direct = {}
    for c, name in enumerate(names):
        labels, scores = (targets == c).astype(int), probabilities[:, c]
        entry = metrics["classes"][name]
        direct[name] = rank_auc(labels, scores) if 0 < labels.sum() < labels.size else math.nan
        assert entry["auc"] == pytest.approx(direct[name], abs=AUC_TOLERANCE, nan_ok=True)
        assert entry["ece"] == pytest.approx(_direct_ece(scores, labels), abs=1e-9)
        assert (
            entry["positives"] == labels.sum() and entry["negatives"] == labels.size - labels.sum()
        )
    defined = [v for v in direct.values() if not math.isnan(v)]
    assert metrics["macro-auc-classes"] == len(defined)
    assert metrics["macro-auc"] == pytest.approx(
        np.mean(defined) if defined else math.nan, abs=AUC_TOLERANCE, nan_ok=True
    )
    one_hot = np.eye(k, dtype=int)[targets]
    assert metrics["micro-auc"] == pytest.approx(
        rank_auc(one_hot.ravel(), probabilities.ravel()), abs=AUC_TOLERANCE
    )


@pytest.mark.parametrize("seed", TRIALS)
def test_multilabel_histograms_pool_to_the_figures_of_the_pooled_scores(seed: int) -> None:
    # Prepare
    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(1, 6))
    names, sites = _classes(k), _sigmoid_sites(rng, k)
    scores = np.concatenate([s for s, _ in sites])
    targets = np.concatenate([t for _, t in sites])
    # Execute
    pooled = _pooled(sites, lambda s, t: ClassHistograms.of_multilabel(s, t, names, FINE_BINS))
    metrics = class_metrics(pooled)
    # Assert
    _assert_same(pooled, ClassHistograms.of_multilabel(scores, targets, names, FINE_BINS))
    aucs = [
        rank_auc(targets[:, c], scores[:, c])
        if 0 < targets[:, c].sum() < len(targets)
        else math.nan
        for c in range(k)
    ]
    for c, name in enumerate(names):
        assert metrics["classes"][name]["auc"] == pytest.approx(
            aucs[c], abs=AUC_TOLERANCE, nan_ok=True
        )
    defined = [v for v in aucs if not math.isnan(v)]
    assert metrics["macro-auc-classes"] == len(defined)
    assert metrics["macro-auc"] == pytest.approx(np.mean(defined), abs=AUC_TOLERANCE)
    assert metrics["micro-auc"] == pytest.approx(
        rank_auc(targets.ravel(), scores.ravel()), abs=AUC_TOLERANCE
    )
    eces = [_direct_ece(scores[:, c], targets[:, c]) for c in range(k)]
    assert metrics["macro-ece"] == pytest.approx(np.mean(eces), abs=1e-9)


@pytest.mark.parametrize("seed", TRIALS)
def test_operating_points_are_those_of_the_pooled_scores(seed: int) -> None:
    # Prepare: some classes get a threshold on a bin edge, the others fall back to Youden
    rng = np.random.default_rng(2000 + seed)
    k = int(rng.integers(2, 5))
    names, sites = _classes(k), _sigmoid_sites(rng, k)
    scores = np.concatenate([s for s, _ in sites])
    targets = np.concatenate([t for _, t in sites])
    # A given threshold is a bin edge (an earlier round's Youden threshold): off an edge, the
    # pooled figures apply the nearest edge and report it.
    given = {names[0]: float(logit_binning().edges[rng.integers(1, BINS)])}
    # Execute
    pooled = _pooled(sites, lambda s, t: ClassHistograms.of_multilabel(s, t, names))
    metrics = class_metrics(pooled, given)
    # Assert
    for c, name in enumerate(names):
        entry, labels = metrics["classes"][name], targets[:, c].astype(bool)
        expected = given.get(name, youden_threshold(pooled[name]))
        called = scores[:, c] >= expected
        assert entry["threshold"] == expected
        if labels.all() or not labels.any():  # one-sided class: ratios undefined, checked elsewhere
            continue
        assert entry["sensitivity"] == pytest.approx(called[labels].mean(), abs=1e-12)
        assert entry["specificity"] == pytest.approx((~called[~labels]).mean(), abs=1e-12)
        assert entry["auc-ci-low"] <= entry["auc"] <= entry["auc-ci-high"]


def test_a_class_missing_at_one_site_is_defined_once_pooled() -> None:
    # Prepare: site A has no image of class 2; site B has some
    rng = np.random.default_rng(7)
    names = _classes(3)
    a_targets, b_targets = rng.integers(0, 2, 80), rng.integers(0, 3, 120)
    a_probs, b_probs = rng.dirichlet(np.ones(3), 80), rng.dirichlet(np.ones(3), 120)
    # Execute
    site_a = ClassHistograms.of_multiclass(a_probs, a_targets, names)
    pooled = site_a + ClassHistograms.of_multiclass(b_probs, b_targets, names)
    # Assert
    assert math.isnan(class_metrics(site_a)["classes"]["finding-2"]["auc"])
    assert class_metrics(site_a)["macro-auc-classes"] == 2
    targets, probs = np.concatenate([a_targets, b_targets]), np.concatenate([a_probs, b_probs])
    assert class_metrics(pooled)["classes"]["finding-2"]["auc"] == pytest.approx(
        rank_auc((targets == 2).astype(int), probs[:, 2]), abs=AUC_TOLERANCE
    )
    assert class_metrics(pooled)["macro-auc-classes"] == 3


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_macro_auc() -> None:
    # Prepare: no image has finding-1 at any site
    scores = np.array([[0.9, 0.2], [0.8, 0.4], [0.3, 0.1], [0.1, 0.7]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    # Execute
    hists = ClassHistograms.of_multilabel(scores[:2], targets[:2], ("effusion", "nodule"))
    hists = hists + ClassHistograms.of_multilabel(scores[2:], targets[2:], ("effusion", "nodule"))
    metrics = class_metrics(hists)
    # Assert
    nodule = metrics["classes"]["nodule"]
    assert math.isnan(nodule["auc"]) and math.isnan(nodule["auc-ci-low"])
    assert math.isnan(nodule["sensitivity"]) and nodule["threshold"] == 0.5
    assert metrics["macro-auc"] == metrics["classes"]["effusion"]["auc"] == 1.0
    assert metrics["macro-auc-classes"] == 1
    assert json.loads(json.dumps(metrics))["macro-auc-classes"] == 1  # plain Python values


def test_mismatched_class_lists_are_refused() -> None:
    a = ClassHistograms.empty(("effusion", "nodule"))
    with pytest.raises(ValueError, match="same classes in the same order"):
        _ = a + ClassHistograms.empty(("nodule", "effusion"))
    with pytest.raises(ValueError, match="same classes"):
        _ = ConfusionCounts.empty(("a", "b")) + ConfusionCounts.empty(("a", "b", "c"))
    with pytest.raises(ValueError, match="same structures"):
        _ = LabelOverlaps.empty(2) + LabelOverlaps.empty(3)
    with pytest.raises(ValueError, match="not among"):
        class_metrics(a, {"pneumothorax": 0.5})
    with pytest.raises(ValueError, match="distinct"):
        ClassHistograms.empty(("nodule", "nodule"))


def test_class_histograms_round_trip_through_arrays_and_refuse_bad_ones() -> None:
    # Prepare
    names = ("effusion", "nodule", "mass")
    hists = ClassHistograms.of_multiclass(
        np.random.default_rng(3).dirichlet(np.ones(3), 50), np.arange(50) % 3, names, bins=100
    )
    arrays = hists.to_arrays()
    # Execute
    again = ClassHistograms.from_arrays(names, arrays)
    # Assert
    assert {a.shape for a in arrays.values()} == {(3, 100)}
    _assert_same(again, hists)
    with pytest.raises(ValueError, match="2 classes × bins"):
        ClassHistograms.from_arrays(names[:2], arrays)
    with pytest.raises(ValueError, match="≥ 0"):
        ClassHistograms.from_arrays(
            names, {**arrays, CLASS_HIST_POSITIVES: -arrays[CLASS_HIST_POSITIVES]}
        )
    with pytest.raises(ValueError, match="0/1"):
        ClassHistograms.of_multilabel(np.full((2, 3), 0.5), np.full((2, 3), 2), names)


def test_one_class_is_the_binary_histogram() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    single = ClassHistograms.of_multilabel(scores[:, None], labels[:, None], ("finding",))
    binary = ScoreHistogram.of(scores, labels)
    assert class_metrics(single)["classes"]["finding"]["auc"] == auc(binary) == 0.75
    assert class_metrics(single)["micro-auc"] == 0.75
    assert class_metrics(single)["classes"]["finding"]["ece"] == expected_calibration_error(binary)
    assert (
        class_metrics(single, {"finding": 0.3})["classes"]["finding"]["specificity"]
        == (at_threshold(binary, 0.3)["specificity"])
    )


@pytest.mark.parametrize("seed", TRIALS)
def test_summed_confusion_matrices_give_the_figures_of_the_pooled_predictions(seed: int) -> None:
    # Prepare
    rng = np.random.default_rng(3000 + seed)
    k = int(rng.integers(2, 7))
    names = _classes(k)
    sites = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.integers(1, 200))
        # a few classes may be absent at a site, or everywhere, or never predicted
        truth = rng.choice(k, n, p=rng.dirichlet(np.full(k, 0.5)))
        right = rng.random(n) < rng.uniform(0.2, 0.9)
        sites.append((np.where(right, truth, rng.choice(k, n, p=rng.dirichlet(np.ones(k)))), truth))
    predicted = np.concatenate([p for p, _ in sites])
    truth = np.concatenate([t for _, t in sites])
    # Execute
    total = ConfusionCounts.empty(names)
    for p, t in sites:
        total = total + ConfusionCounts.of(p, t, names)
    metrics = total.metrics()
    # Assert: matrix, then each figure computed directly from the concatenated predictions
    direct = np.array(
        [[np.sum((truth == i) & (predicted == j)) for j in range(k)] for i in range(k)]
    )
    assert np.array_equal(total.matrix, direct)
    assert metrics["accuracy"] == np.mean(predicted == truth)
    present = [c for c in range(k) if (truth == c).any()]
    assert metrics["balanced-accuracy"] == np.mean(
        [np.sum((predicted == c) & (truth == c)) / np.sum(truth == c) for c in present]
    )
    assert metrics["balanced-accuracy-classes"] == len(present)
    f1s = []
    for c in range(k):
        tp = np.sum((predicted == c) & (truth == c))
        fp, fn = np.sum((predicted == c) & (truth != c)), np.sum((predicted != c) & (truth == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
        assert metrics["classes"][names[c]]["support"] == np.sum(truth == c)
    assert metrics["macro-f1"] == np.mean(f1s) and metrics["macro-f1-classes"] == len(f1s)


def test_confusion_counts_small_exact_example_and_round_trip() -> None:
    # Prepare: 3 classes; class "c" never occurs and is never predicted
    counts = ConfusionCounts.of(
        np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 1]), ("a", "b", "c")
    )
    # Execute
    metrics = counts.metrics()
    again = ConfusionCounts.from_array(("a", "b", "c"), counts.to_array().astype(float))
    # Assert
    assert counts.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["balanced-accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["classes"]["a"]["precision"] == 1.0 and metrics["classes"]["b"]["f1"] == 0.8
    assert math.isnan(metrics["classes"]["c"]["f1"]) and metrics["macro-f1-classes"] == 2
    assert np.array_equal(again.matrix, counts.matrix) and again.matrix.dtype == np.int64
    with pytest.raises(ValueError, match="whole"):
        ConfusionCounts.from_array(("a", "b", "c"), np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="0..2"):
        ConfusionCounts.of(np.array([3]), np.array([0]), ("a", "b", "c"))
    assert math.isnan(ConfusionCounts.empty(("a", "b")).metrics()["accuracy"])


@pytest.mark.parametrize("seed", TRIALS)
def test_summed_label_overlaps_give_the_dice_of_the_pooled_label_maps(seed: int) -> None:
    # Prepare: sites of label-map batches (N × H × W, values 0..K); structure K may be absent
    rng = np.random.default_rng(4000 + seed)
    k = int(rng.integers(1, 5))
    sites = []
    for _ in range(int(rng.integers(2, 5))):
        shape = (int(rng.integers(1, 4)), int(rng.integers(4, 16)), int(rng.integers(4, 16)))
        truth = rng.choice(k + 1, shape, p=rng.dirichlet(np.ones(k + 1)))
        noise = rng.choice(k + 1, shape)
        sites.append((np.where(rng.random(shape) < rng.uniform(0.3, 0.9), truth, noise), truth))
    if seed % 5 == 0:  # the last structure absent everywhere: its Dice is undefined
        sites = [(np.minimum(p, k - 1), np.minimum(t, k - 1)) for p, t in sites]
    predicted = np.concatenate([p.reshape(-1) for p, _ in sites])
    truth = np.concatenate([t.reshape(-1) for _, t in sites])
    # Execute
    total = LabelOverlaps.empty(k)
    for p, t in sites:
        total = total + LabelOverlaps.of(p, t, labels=k)
    metrics = total.metrics([f"structure-{i}" for i in range(1, k + 1)])
    # Assert
    dices = []
    for label in range(1, k + 1):
        a, b = predicted == label, truth == label
        expected = [np.sum(a & b), np.sum(a & ~b), np.sum(~a & b)]
        assert total.counts[label - 1].tolist() == expected
        entry = metrics["labels"][f"structure-{label}"]
        if a.sum() + b.sum() == 0:
            assert math.isnan(entry["dice"]) and math.isnan(entry["iou"])
            continue
        dices.append(2 * np.sum(a & b) / (a.sum() + b.sum()))
        assert entry["dice"] == dices[-1]
        assert entry["iou"] == pytest.approx(np.sum(a & b) / np.sum(a | b), abs=1e-12)
    assert metrics["mean-labels"] == len(dices)
    assert metrics["mean-dice"] == pytest.approx(np.mean(dices) if dices else math.nan, nan_ok=True)


def test_one_label_matches_the_binary_overlap_counts_and_round_trips() -> None:
    from fedscan.common.metrics.segmentation import OverlapCounts

    # Prepare
    rng = np.random.default_rng(11)
    predicted, truth = rng.integers(0, 2, (3, 1, 8, 8)), rng.integers(0, 2, (3, 1, 8, 8))
    # Execute
    overlaps = LabelOverlaps.of(predicted, truth, labels=1)
    binary = OverlapCounts.of(predicted, truth)
    # Assert
    assert overlaps.metrics(["lesion"])["labels"]["lesion"]["dice"] == pytest.approx(binary.dice)
    assert overlaps.metrics(["lesion"])["mean-iou"] == pytest.approx(binary.iou)
    again = LabelOverlaps.from_array(overlaps.to_array())
    assert again.to_array().shape == (1, 3) and np.array_equal(again.counts, overlaps.counts)
    with pytest.raises(ValueError, match="0..1"):
        LabelOverlaps.of(np.full((2, 2), 2), np.zeros((2, 2), int), labels=1)
    with pytest.raises(ValueError, match="differ in shape"):
        LabelOverlaps.of(np.zeros((2, 2), int), np.zeros((2, 3), int), labels=1)
    with pytest.raises(ValueError, match="K × 3"):
        LabelOverlaps.from_array(np.zeros((2, 4)))
