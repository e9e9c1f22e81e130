"""A whole in-process DP federation in which one site lowers its metric budget mid-run: its
evaluations degrade to ``final-only`` with a logged notice, the run completes, the final
evaluation is still released, and the site's metric ε stays within the lowered budget (issue 24;
the per-release rules are tested in tests/client/test_metric_release.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import Context

from fedscan.client.app import make_client_app
from fedscan.client.metric_ledger import MetricLedger
from fedscan.client.site import Site
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.privacy import PrivacyConfig, gdp_epsilon, metric_noise
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.helpers import OPEN_POLICY, LoopbackGrid, site_resolver

ROUNDS = 3  # per-round releases of the aggregates of rounds 1 and 2, then the final one


def _lowered_budget() -> float:
    """A quarter less μ² than the run plans: round 1's release fits, round 2's would not."""
    per_round, final, _ = metric_noise(
        epsilon=OPEN_POLICY.max_epsilon_metrics_per_run,
        delta=OPEN_POLICY.delta,
        rounds=ROUNDS - 1,
        final=True,
        cross_site=False,
    )
    mu_squared = (ROUNDS - 1) / per_round**2 + 1 / final**2  # per_round: one release's noise
    return gdp_epsilon((0.75 * mu_squared) ** 0.5, OPEN_POLICY.delta)


def _completed_run(grid: LoopbackGrid, rounds: int, tmp_path: Path) -> list[dict]:
    """A 3-site DP run of ``rounds`` on ``grid``, which must complete: its metrics lines."""
    config = RunConfig(
        rounds=rounds,
        min_sites=3,
        cross_site=False,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    run_dir = run_federation(grid, config, RunDirectory.create(tmp_path / "runs")).run_dir.path
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_site_that_lowers_its_metric_budget_mid_run_degrades_to_final_only(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: site-0's resolver hands out the lowered budget from its third message on (round
    # 3's train message, which carries round 2's evaluation)
    caplog.set_level(logging.WARNING)
    lowered = replace(OPEN_POLICY, max_epsilon_metrics_per_run=_lowered_budget())
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites)]
    calls = {"site-0": 0}

    def resolve(context: Context) -> Site:
        source = sources[int(context.node_config["partition-id"])]
        policy = OPEN_POLICY
        if source.name == "site-0":
            calls["site-0"] += 1
            policy = lowered if calls["site-0"] >= 3 else OPEN_POLICY
        return Site(source, tmp_path / "state" / source.name, policy)

    grid = LoopbackGrid(make_client_app(resolve, device="cpu"), len(sources))
    # Execute
    lines = _completed_run(grid, ROUNDS, tmp_path)
    # Assert: site-0 withheld round 2's evaluation and released the final one
    round_two = lines[1]["evaluate"]["site-0"]  # the aggregate of round 2, scored in round 3
    assert round_two.get("metrics-withheld") == 1
    assert lines[-1]["metrics_policy"]["site-0"] == "final-only"
    assert lines[-1]["metrics_policy"]["site-1"] == "dp"
    assert "dp-noise-std" not in lines[-1]["evaluate"]["site-0"]  # moved into the pool
    assert lines[-1]["evaluate"]["site-0"]["num-examples"] > 0  # the final one was released
    assert caplog.text.count("releasing the final evaluation only") == 1
    ledger = MetricLedger(tmp_path / "state" / "site-0")
    (run,) = ledger.runs()
    spent = ledger.epsilon(OPEN_POLICY.delta, run_id=run.run_id)
    assert spent <= lowered.max_epsilon_metrics_per_run * (1 + 1e-6)


def test_sites_of_three_metric_policies_complete_one_run(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: site-0 under dp, site-1 coarse (exact, no metric ε), site-2 withholding everything.
    # Flower averages only records of equal keys: it used to refuse this final evaluation.
    policies = [replace(OPEN_POLICY, metrics=name) for name in ("dp", "coarse", "none")]
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites)]
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, tmp_path / "state", policies), device="cpu"), 3
    )
    # Execute
    final = _completed_run(grid, 2, tmp_path)[-1]
    # Assert: each site's policy on record, the pool from the two that released
    assert final["metrics_policy"] == {"site-0": "dp", "site-1": "coarse", "site-2": "none"}
    assert final["evaluate"]["site-2"]["metrics-withheld"] == 1
    pooled = final["pooled"]
    assert (
        pooled["noise-std"] > 0 and pooled["auc-ci-low"] <= pooled["auc"] <= pooled["auc-ci-high"]
    )
