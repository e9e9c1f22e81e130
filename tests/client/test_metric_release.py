"""A site's metric releases by its policy: DP ones in the ledger under their own budget (ε
recomputed independently), replayed not redrawn, a run that would overspend degraded to final-only
(not failed), and the other policies as they promise."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedscan.client.ledger import PrivacyLedger
from fedscan.client.metric_ledger import MetricLedger
from fedscan.client.metric_release import CROSS_SITE, FINAL, ROUND, MetricAsk, release
from fedscan.client.privacy_report import privacy_report
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common import protocol
from fedscan.common.metrics.binning import COARSE_BINS
from fedscan.common.metrics.classwise import ClassEvidence
from fedscan.common.metrics.confusion import LabelOverlaps
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.privacy import epsilon_spent, gdp_epsilon
from fedscan.common.tasks import MULTICLASS, LabelScheme

POLICY = PrivacyPolicy(max_epsilon_per_run=8.0, max_epsilon_lifetime=80.0, delta=1e-5)


def _scored(seed: int = 0, n: int = 200) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = 1 / (1 + np.exp(-np.where(labels, rng.normal(1.5, 1, n), rng.normal(-1.5, 1, n))))
    return {protocol.GLOBAL_MODEL: ({protocol.AUC: 0.9}, ScoreHistogram.of(scores, labels))}


def _ask(kind: str, step: int, model: str = "m", *, rounds: int = 3, cross_site=False):
    return MetricAsk("run-1", kind, step, rounds, cross_site, 0.5, model)


def test_each_dp_release_is_a_ledger_row_whose_epsilon_an_independent_accountant_agrees_with(
    tmp_path: Path,
) -> None:
    # Execute: the run's plan — rounds 1 and 2 evaluated in later train messages, then the final
    for kind, step in ((ROUND, 1), (ROUND, 2), (FINAL, 3)):
        sent, policy = release(POLICY, tmp_path, _ask(kind, step), _scored(step))
        assert policy == "dp" and protocol.DP_NOISE_STD in sent[protocol.GLOBAL_MODEL][0]
    # Assert
    ledger = MetricLedger(tmp_path)
    rows = ledger.releases("run-1")
    assert [row.kind for row in rows] == [ROUND, ROUND, FINAL]
    ours = ledger.epsilon(POLICY.delta, run_id="run-1")
    prv = epsilon_spent([row.history for row in rows], POLICY.delta)  # Opacus' PRV accountant
    assert abs(ours - prv) / prv < 0.01
    assert ours == pytest.approx(POLICY.max_epsilon_metrics_per_run, rel=1e-6)  # the plan, spent
    assert PrivacyLedger(tmp_path).releases() == []  # the training budget is untouched


def test_a_release_asked_again_is_resent_from_the_ledger_not_redrawn(tmp_path: Path) -> None:
    # Execute
    first, _ = release(POLICY, tmp_path, _ask(ROUND, 1), _scored())
    again, _ = release(POLICY, tmp_path, _ask(ROUND, 1), _scored())
    # Assert
    (metrics, noisy), (metrics_again, noisy_again) = first["global"], again["global"]
    assert metrics == metrics_again and np.array_equal(noisy.positives, noisy_again.positives)
    assert len(MetricLedger(tmp_path).releases("run-1")) == 1


def test_releases_beyond_the_budget_degrade_the_run_to_final_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup: a coordinator asking for more per-round evaluations than the run plans (2 of them)
    caplog.set_level(logging.WARNING)
    sent = [release(POLICY, tmp_path, _ask(ROUND, 1, f"model-{i}"), _scored(i)) for i in range(4)]
    # Execute
    final, policy = release(POLICY, tmp_path, _ask(FINAL, 3), _scored(9))
    # Assert: two released, then withheld with one notice; the final still released
    withheld = [s[protocol.GLOBAL_MODEL][0].get(protocol.METRICS_WITHHELD) for s, _ in sent]
    assert withheld == [None, None, 1, 1] and [p for _, p in sent][2:] == ["final-only"] * 2
    assert caplog.text.count("releasing the final evaluation only") == 1
    assert protocol.DP_NOISE_STD in final[protocol.GLOBAL_MODEL][0]
    spent = MetricLedger(tmp_path).epsilon(POLICY.delta, run_id="run-1")
    assert spent <= POLICY.max_epsilon_metrics_per_run * (1 + 1e-9)


def test_a_budget_lowered_during_a_run_degrades_it_and_keeps_the_final_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup: 3 rounds plan rounds 1 and 2 (half of μ² between them) and the final (the other
    # half); after round 1 the site lowers its budget to what a quarter less μ² gives
    release(POLICY, tmp_path, _ask(ROUND, 1), _scored(1))
    (run,) = MetricLedger(tmp_path).runs()
    mu_squared = 2 / run.round_noise**2 + 1 / run.final_noise**2
    lowered = replace(
        POLICY, max_epsilon_metrics_per_run=gdp_epsilon((0.75 * mu_squared) ** 0.5, 1e-5)
    )
    # Execute
    second, policy = release(lowered, tmp_path, _ask(ROUND, 2), _scored(2))
    final, _ = release(lowered, tmp_path, _ask(FINAL, 3), _scored(3))
    # Assert
    assert second["global"][0] == {"metrics-withheld": 1, "num-examples": 0}
    assert policy == "final-only" and "releasing the final evaluation only" in caplog.text
    assert protocol.DP_NOISE_STD in final["global"][0]
    spent = MetricLedger(tmp_path).epsilon(1e-5, run_id="run-1")
    assert spent <= lowered.max_epsilon_metrics_per_run * (1 + 1e-6)


def test_no_release_while_delta_is_not_below_one_over_the_validation_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup: 200 validation images; δ = 1/200 would let a release expose one image outright
    loose = replace(POLICY, delta=1 / 200)
    # Execute
    sent, applied = release(loose, tmp_path, _ask(FINAL, 3), _scored(n=200))
    kept, _ = release(replace(POLICY, delta=1 / 201), tmp_path, _ask(FINAL, 3), _scored(n=200))
    # Assert
    assert applied == "dp" and sent[protocol.GLOBAL_MODEL][0][protocol.METRICS_WITHHELD] == 1
    assert "Lower [privacy] delta" in caplog.text and "1/(validation images)" in caplog.text
    assert protocol.DP_NOISE_STD in kept[protocol.GLOBAL_MODEL][0]
    assert len(MetricLedger(tmp_path).releases("run-1")) == 1  # the withheld one spent nothing


def test_the_cross_site_release_is_planned_and_reserved(tmp_path: Path) -> None:
    # Execute
    for kind, step in ((ROUND, 1), (ROUND, 2), (FINAL, 3)):
        release(POLICY, tmp_path, _ask(kind, step, cross_site=True), _scored(step))
    models = {**_scored(1), "local:site-1": _scored(2)[protocol.GLOBAL_MODEL]}
    sent, _ = release(POLICY, tmp_path, _ask(CROSS_SITE, 3, cross_site=True), models)
    # Assert: both models in one release, each with √2 the noise of a one-model release
    stds = {name: found[0][protocol.DP_NOISE_STD] for name, found in sent.items()}
    assert set(stds) == set(models) and len(set(stds.values())) == 1
    ledger = MetricLedger(tmp_path)
    (run,) = ledger.runs()
    assert stds["global"] == pytest.approx(run.cross_site_noise * np.sqrt(2) * np.sqrt(2))
    spent = ledger.epsilon(POLICY.delta, run_id="run-1")
    assert spent == pytest.approx(POLICY.max_epsilon_metrics_per_run, rel=1e-6)


@pytest.mark.parametrize("policy", ["final-only", "none", "coarse"])
def test_the_other_policies(policy: str, tmp_path: Path) -> None:
    # Execute
    site = replace(POLICY, metrics=policy)
    round_sent, applied = release(site, tmp_path, _ask(ROUND, 1), _scored())
    final_sent, _ = release(site, tmp_path, _ask(FINAL, 3), _scored())
    # Assert
    (round_metrics, round_hist) = round_sent[protocol.GLOBAL_MODEL]
    (final_metrics, final_hist) = final_sent[protocol.GLOBAL_MODEL]
    assert applied == policy
    if policy == "coarse":  # exact, coarse: outside the guarantee, nothing in the ledger
        fine = _scored()[protocol.GLOBAL_MODEL][1]
        assert round_hist.bins == COARSE_BINS
        assert round_hist.positives.sum() == fine.positives.sum()
        assert np.array_equal(np.cumsum(round_hist.negatives)[-1], fine.negatives.sum())
        assert MetricLedger(tmp_path).releases() == []
    elif policy == "none":
        assert round_metrics == final_metrics == {"metrics-withheld": 1, "num-examples": 0}
    else:
        assert round_metrics[protocol.METRICS_WITHHELD] == 1 and round_hist is None
        assert protocol.DP_NOISE_STD in final_metrics  # the whole budget on the final one
        (row,) = MetricLedger(tmp_path).releases()
        assert row.kind == FINAL


def test_per_class_evidence_and_overlap_counts_have_their_own_dp_release(tmp_path: Path) -> None:
    # Setup: a multiclass site's evidence and a segmentation site's counts (64² masks)
    scheme = LabelScheme(MULTICLASS, ("a", "b", "c"))
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), 30)
    evidence = ClassEvidence.of(probabilities, np.arange(30) % 3, scheme)
    counts = {"seg-intersection": 800.0, "seg-predicted": 1000.0, "seg-truth": 1200.0}
    segmentation = {**counts, "dice": 0.73, "hd95": 3.0, "num-examples": 12}
    ask = replace(_ask(FINAL, 3), pixels=64 * 64)
    # Execute
    classes, _ = release(POLICY, tmp_path / "a", ask, {"global": ({}, evidence)})
    masks, _ = release(POLICY, tmp_path / "b", ask, {"global": (segmentation, None)})
    again, _ = release(POLICY, tmp_path / "a", ask, {"global": ({}, evidence)})
    # Assert: the noise by each one's sensitivity, √(K + 1) and 2; nothing exact in the figures
    (run,) = MetricLedger(tmp_path / "a").runs()
    class_metrics, noisy = classes["global"]
    assert class_metrics[protocol.DP_NOISE_STD] == pytest.approx(run.final_noise * 2.0)
    assert noisy.positives.shape == (3, COARSE_BINS) and noisy.confusion.shape == (3, 3)
    assert "macro-auc" in class_metrics and set(noisy.to_lists()) == set(protocol.DP_CLASS_KEYS)
    assert np.array_equal(again["global"][1].positives, noisy.positives)  # re-sent, not redrawn
    mask_metrics, overlap = masks["global"]
    assert mask_metrics[protocol.DP_NOISE_STD] == pytest.approx(run.final_noise * 2.0)
    assert set(mask_metrics) == {"dice", "iou", "num-examples", "dp-noise-std", "metrics-epsilon"}
    assert overlap.to_lists()[protocol.DP_SEG_COUNTS][:3] != list(counts.values())


def test_one_image_moves_a_label_map_s_counts_by_at_most_root_2_pixel_units() -> None:
    # The sensitivity NoisyLabelOverlaps relies on (√2, and 1 for the image count: √3)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(300):
        k = int(rng.integers(2, 6))
        predicted, truth = rng.integers(0, k + 1, (2, 1, 1, 8, 8))
        if rng.random() < 0.3:  # one label predicted everywhere, another true everywhere
            predicted, truth = np.full_like(predicted, 1), np.full_like(truth, k)
        units = LabelOverlaps.of(predicted, truth, labels=k).to_array() / 64
        worst = max(worst, float((units**2).sum()))
    assert worst == pytest.approx(2.0)


def test_a_label_map_evaluation_is_released_under_dp_and_resent_unchanged(tmp_path: Path) -> None:
    # Setup: 12 images of 64² with three structures
    rng = np.random.default_rng(1)
    predicted, truth = rng.integers(0, 4, (2, 12, 1, 64, 64))
    overlaps = LabelOverlaps.of(predicted, truth, labels=3)
    scored = {"global": ({protocol.NUM_EXAMPLES: 12}, overlaps)}
    ask = replace(_ask(FINAL, 3), pixels=64 * 64)
    # Execute
    sent, policy = release(POLICY, tmp_path, ask, scored)
    again, _ = release(POLICY, tmp_path, ask, scored)
    # Assert: noise of the final release at sensitivity √3; figures from the noisy counts only
    (run,) = MetricLedger(tmp_path).runs()
    metrics, noisy = sent["global"]
    assert policy == "dp" and metrics[protocol.DP_NOISE_STD] == pytest.approx(
        run.final_noise * 3**0.5
    )
    assert set(metrics) == {"dice", "iou", "num-examples", "dp-noise-std", "metrics-epsilon"}
    values = noisy.to_lists()[protocol.DP_LABEL_OVERLAPS]
    assert len(values) == 10 and values[:9] != overlaps.to_array().reshape(-1).tolist()
    assert again["global"][1].to_lists() == noisy.to_lists()  # re-sent from the ledger


def test_the_privacy_report_shows_both_budgets(tmp_path: Path) -> None:
    # Setup
    release(POLICY, tmp_path, _ask(FINAL, 3), _scored())
    config = type("Config", (), {"state_dir": tmp_path, "policy": POLICY, "name": "site-a"})
    # Execute
    report = privacy_report(config)  # type: ignore[arg-type]
    # Assert
    (run,) = report["metrics"]["runs"]
    assert run["run_id"] == "run-1" and run["policy"] == "dp" and run["releases"] == 1
    assert 0 < run["epsilon"] < POLICY.max_epsilon_metrics_per_run
    assert report["metrics"]["budget_per_run"] == POLICY.max_epsilon_metrics_per_run


@pytest.mark.parametrize("given", [None, "coarse"])
def test_simulated_sites_take_the_simulation_s_metric_policy(given: str | None, tmp_path) -> None:
    # Setup: the run config `fedscan simulate --site-metrics` writes
    from flwr.app import Context, RecordDict

    from fedscan.client.site import SIMULATION_NODE_KEY, simulated_site
    from fedscan.common.data.sources import FolderSource, sources_to_json

    run_config = {
        protocol.SIMULATION_SITES: sources_to_json([FolderSource("site-0", str(tmp_path))]),
        protocol.SIMULATION_STATE_DIR: str(tmp_path / "state"),
        **({protocol.SIMULATION_METRICS: given} if given else {}),
    }
    context = Context(1, 1, {SIMULATION_NODE_KEY: 0}, RecordDict(), run_config)
    # Execute
    site = simulated_site(context)
    # Assert
    assert site.policy.metrics == (given or "dp")
