"""The cross-site matrix: pooled columns from summed histograms, gaps for missing sites."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common.metrics.classification import binary_metrics
from fedscan.common.metrics.crosssite import (
    CrossSiteMatrix,
    SiteEvaluation,
    build_matrix,
    metric_epsilon,
)
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.privacy import planned_releases
from fedscan.common.protocol import GLOBAL_MODEL, local_model_name
from tests.common.test_histogram import direct_auc


def _site(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    scores = np.clip(rng.normal(0.4 + shift * labels, 0.2), 0, 1)
    return scores, labels


def test_pooled_column_equals_the_auc_of_all_sites_scores_together() -> None:
    rng = np.random.default_rng(4)
    models = [GLOBAL_MODEL, local_model_name("a"), local_model_name("b")]
    results, pooled_scores = {}, {m: ([], []) for m in models}
    for site, n in (("a", 120), ("b", 300), ("c", 45)):
        results[site] = {}
        for index, model in enumerate(models):
            scores, labels = _site(rng, n, 0.1 * (index + 1))
            results[site][model] = SiteEvaluation(
                binary_metrics(labels, scores), ScoreHistogram.of(scores, labels)
            )
            pooled_scores[model][0].append(scores)
            pooled_scores[model][1].append(labels)
    matrix = build_matrix(results, models=models, threshold=0.5)
    assert matrix.sites == ("a", "b", "c") and matrix.models == tuple(models)
    for model in models:
        direct = direct_auc(
            np.concatenate(pooled_scores[model][0]), np.concatenate(pooled_scores[model][1])
        )
        assert matrix.pooled[model]["auc"] == pytest.approx(direct, abs=0.002)
        assert matrix.pooled[model]["n"] == 465
    grid = matrix.values("auc")
    assert len(grid) == 3 and all(len(row) == 3 and all(0 <= v <= 1 for v in row) for row in grid)


def test_a_site_that_did_not_evaluate_a_model_leaves_a_gap_and_the_json_round_trips() -> None:
    rng = np.random.default_rng(1)
    scores, labels = _site(rng, 50, 0.3)
    evaluation = SiteEvaluation(binary_metrics(labels, scores), ScoreHistogram.of(scores, labels))
    models = [GLOBAL_MODEL, local_model_name("a")]
    matrix = build_matrix(
        {"a": {GLOBAL_MODEL: evaluation, models[1]: evaluation}, "b": {GLOBAL_MODEL: evaluation}},
        models=models,
        threshold=0.3,
        notes=["b did not evaluate local:a"],
        epsilon={"a": 2.5},
    )
    assert matrix.values("auc")[1][1] is None and matrix.values("auc")[0][1] is not None
    again = CrossSiteMatrix.from_json(matrix.to_json())
    assert again.values("accuracy") == matrix.values("accuracy") and again.epsilon == {"a": 2.5}
    assert again.notes == ("b did not evaluate local:a",) and again.threshold == 0.3


def test_sites_plan_one_more_release_for_the_local_fine_tune() -> None:
    assert planned_releases(5, True) == 6 and planned_releases(5, False) == 5


def test_a_confident_local_model_pools_to_the_auc_its_sites_see() -> None:
    # Prepare: the model behind a 0.500 in fedscan 0.1 (per-site AUC ≈ 0.95, every score < 0.001)
    rng = np.random.default_rng(11)
    model = local_model_name("a")
    results, scores_all, labels_all = {}, [], []
    for site, n in (("a", 200), ("b", 150), ("c", 90)):
        labels = rng.integers(0, 2, n)
        scores = 1 / (1 + np.exp(-(rng.normal(-12, 1, n) + 3.3 * labels)))
        results[site] = {
            model: SiteEvaluation(binary_metrics(labels, scores), ScoreHistogram.of(scores, labels))
        }
        scores_all.append(scores)
        labels_all.append(labels)
    # Execute
    matrix = build_matrix(results, models=[model], threshold=0.5)
    # Assert
    per_site = [row[0] for row in matrix.values("auc")]
    assert min(per_site) > 0.9
    pooled = matrix.pooled[model]["auc"]
    assert min(per_site) - 0.02 <= pooled <= max(per_site) + 0.02
    assert pooled == pytest.approx(
        direct_auc(np.concatenate(scores_all), np.concatenate(labels_all)), abs=0.002
    )


def test_a_site_s_metric_epsilon_counts_its_cross_site_release() -> None:
    # Setup: the matrix's cells state each site's metric ε after its cross-site release
    document = {
        "cells": {
            GLOBAL_MODEL: {"a": {"metrics-epsilon": 4.0}, "b": {"metrics-withheld": 1}},
            local_model_name("a"): {"a": {"metrics-epsilon": 4.0}, "b": {"auc": 0.7}},
        }
    }
    # Execute / Assert: b (withheld, or coarse) states none, so its final figure stands
    assert metric_epsilon(document) == {"a": 4.0}
    assert metric_epsilon({}) == {}
