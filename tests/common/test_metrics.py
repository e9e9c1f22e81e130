"""Metrics against a direct, obviously-correct computation."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from fedscan.common.metrics.classification import binary_metrics


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_direct_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1), 2)  # with ties
    metrics = binary_metrics(labels, scores, threshold=0.5)
    predicted = scores >= 0.5
    tp = np.sum(predicted & (labels == 1))
    tn = np.sum(~predicted & (labels == 0))
    fp = np.sum(predicted & (labels == 0))
    fn = np.sum(~predicted & (labels == 1))
    assert metrics["auc"] == pytest.approx(_pairwise_auc(labels, scores))
    assert metrics["accuracy"] == pytest.approx((tp + tn) / 200)
    assert metrics["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert metrics["specificity"] == pytest.approx(tn / (tn + fp))
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert metrics["n"] == 200


def test_small_exact_example() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]))
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["sensitivity"] == pytest.approx(0.5)
    assert metrics["specificity"] == pytest.approx(0.5)


def test_auc_is_undefined_with_one_class() -> None:
    metrics = binary_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]))
    assert math.isnan(metrics["auc"]) and math.isnan(metrics["specificity"])
