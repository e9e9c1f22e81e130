"""An in-process federation: ServerApp logic + ClientApps over a loopback Grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedscan import __version__
from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ConfigError, FedscanError, QuorumError
from fedscan.common.metrics.crosssite import CrossSiteMatrix
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig, epsilon_spent
from fedscan.common.protocol import VERSION
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.round_line import weighted_mean
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import MATRIX_FILE, RunDirectory
from fedscan.server.strategy import RecordingCentralDP
from tests.helpers import (
    LOOSE_DELTA_POLICY,
    OPEN_POLICY,
    LoopbackGrid,
    instruction,
    site_resolver,
)

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)


def _grid(
    sites: list[Path], state: Path, count: int = 3, policies: list[PrivacyPolicy] | None = None
) -> LoopbackGrid:
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(sites[:count])]
    return LoopbackGrid(
        make_client_app(site_resolver(sources, state, policies), device="cpu"), count
    )


# CI time (2 cores): one strategy in the suite, the others with -m slow (each ≈ 13 s).
@pytest.mark.parametrize(
    "strategy",
    [
        "fedavg",
        pytest.param("fedprox", marks=pytest.mark.slow),
        pytest.param("fedadam", marks=pytest.mark.slow),
    ],
)
def test_federation_writes_run_directory_and_every_site_reports(
    strategy: str, flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=2,
        min_sites=3,
        strategy=strategy,
        train=FAST,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    lines = [
        json.loads(line)
        for line in (result.run_dir.path / "metrics.jsonl").read_text().splitlines()
    ]
    assert [line["round"] for line in lines] == [1, 2]
    for line in lines:
        assert sorted(line["evaluate"]) == sorted(line["train"]) == ["site-0", "site-1", "site-2"]
        assert all(0 < eps <= 8.0 * 1.001 for eps in line["epsilon"].values())
    assert all(lines[1]["epsilon"][s] > lines[0]["epsilon"][s] for s in lines[0]["epsilon"])
    assert json.loads((result.run_dir.path / "config.json").read_text())["strategy"] == strategy
    pooled = lines[-1]["pooled"]
    assert pooled["auc-ci-low"] <= pooled["auc"] <= pooled["auc-ci-high"]
    # The sites' DP releases (the default metric policy): n is their noisy counts' sum, and each
    # site's own count is that sum rounded
    assert abs(pooled["n"] - lines[-1]["aggregated"]["num-examples"]) <= 2.0
    assert pooled["noise-std"] > 0 and set(lines[-1]["metrics_policy"].values()) == {"dp"}
    histograms = json.loads((result.run_dir.path / "histograms.json").read_text())
    assert (
        sorted(histograms["sites"]) == ["site-0", "site-1", "site-2"] and histograms["round"] == 2
    )
    assert all(
        "hist-pos" not in m for m in lines[-1]["evaluate"].values()
    )  # kept out of metrics.jsonl
    model, meta = load_checkpoint(result.final_model)
    assert meta["model"] == "small-cnn" and meta["rounds"] == 2
    assert meta["threshold"] == histograms["threshold"] == pooled["threshold"]
    assert meta["calibration"] == histograms["calibration"]  # the Platt map, stored with the model
    assert 0 <= pooled["ece-calibrated"] <= 1
    assert model(torch.rand(2, 1, 64, 64)).shape == (2,)
    assert {m.metadata.message_type for m in grid.delivered} == {"train", "evaluate"}
    # One exchange per round: round 2's train message asks each site to score round 1's aggregate
    # first, so only the last aggregate needs an evaluate message.
    assert sum(m.metadata.message_type == "evaluate" for m in grid.delivered) == 3
    assert [
        bool(m.content["config"]["evaluate-first"])
        for m in grid.delivered
        if m.metadata.message_type == "train"
    ] == [False] * 3 + [True] * 3
    assert all("evaluation" not in line["train"][site] for line in lines for site in line["train"])
    assert not (result.run_dir.path / MATRIX_FILE).exists()
    assert all(m.content["config"]["fedscan-version"] for m in grid.delivered)


def test_cross_site_matrix_evaluates_global_and_dp_fine_tuned_local_models_everywhere(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=1, min_sites=3, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4)
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    matrix = CrossSiteMatrix.from_json(json.loads((result.run_dir.path / MATRIX_FILE).read_text()))
    sites = ("site-0", "site-1", "site-2")
    assert matrix.models == ("global", *(f"local:{s}" for s in sites)) and matrix.sites == sites
    assert all(value is not None for row in matrix.values("auc") for value in row)
    assert (
        set(matrix.pooled) == set(matrix.models)
        and matrix.threshold == result.history[-1]["pooled"]["threshold"]
    )
    for site in sites:  # the fine-tune is one more release in each ledger, still within the run's ε
        releases = PrivacyLedger(tmp_path / "state" / site).releases(result.run_dir.run_id)
        assert [r.round for r in releases] == [
            -1,
            1,
            2,
        ]  # -1: the run's noised training count (client/counts.py)
        assert result.history[0]["epsilon"][site] < matrix.epsilon[site] <= 8.0 * 1.001
    cross = [m for m in grid.delivered if m.metadata.message_type == "evaluate.cross_site"]
    assert len(cross) == 3 and set(cross[0].content.array_records) == set(matrix.models)
    # Every phase reached every site: completed, with nothing missing.
    assert result.gaps == () and result.run_dir.read_status() == {
        "state": "completed",
        "run_id": result.run_dir.run_id,
        "rounds": 1,
    }


def test_without_site_dp_under_central_dp_no_local_model_leaves(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=1,
        min_sites=3,
        train=FAST,
        privacy=PrivacyConfig(enabled=False),
        central_noise_multiplier=1.0,
        central_clip_norm=0.05,
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    matrix = json.loads((result.run_dir.path / MATRIX_FILE).read_text())
    assert matrix["models"] == ["global"] and "site DP is off" in matrix["notes"][0]
    assert (
        sum(m.metadata.message_type == "train" for m in grid.delivered) == 3
    )  # one round, no fine-tune


def test_a_refusing_site_is_recorded_and_the_round_goes_on(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=1, min_sites=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4)
    )
    folders = [*synthetic_sites[:2], tmp_path / "does-not-exist"]  # site-2 lost its data
    sources = [FolderSource(f"site-{i}", str(folder)) for i, folder in enumerate(folders)]
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu"), 3
    )
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    line = result.history[0]
    assert sorted(line["train"]) == ["site-0", "site-1"]
    assert {r["phase"] for r in line["refusals"]} == {"train", "evaluate"}
    assert all("does-not-exist" not in r["reason"] for r in line["refusals"])
    # The round had its quorum, but the final evaluation and the cross-site phases missed site-2
    # (named by its node id: it never sent a reply that carries its name).
    status = result.run_dir.read_status()
    assert status["state"] == "completed-with-gaps"
    assert [(g["phase"], sorted(g["missing"])) for g in status["gaps"]] == [
        ("final evaluation", ["node-102"]),
        ("cross-site fine-tune", ["node-102"]),
        ("cross-site evaluation", ["node-102"]),
    ]
    assert all("does-not-exist" not in str(gap) for gap in status["gaps"])


def test_too_few_sites_ends_within_the_join_timeout(
    flower_identity, synthetic_sites, tmp_path
) -> None:
    config = RunConfig(rounds=1, min_sites=3, join_timeout_s=0.1, train=FAST)
    with pytest.raises(QuorumError, match="3 required"):
        run_federation(
            _grid(synthetic_sites, tmp_path / "state", count=2),
            config,
            RunDirectory.create(tmp_path / "runs"),
        )


def test_weighted_mean_ignores_sites_where_the_metric_is_undefined() -> None:
    per_site = {
        "a": {"auc": 0.8, "num-examples": 30},
        "b": {"auc": 0.5, "num-examples": 10},
        "c": {"auc": math.nan, "num-examples": 60},
    }
    assert weighted_mean(per_site, "auc") == pytest.approx((0.8 * 30 + 0.5 * 10) / 40)


def test_a_run_where_every_site_refuses_fails_clearly(
    flower_identity, synthetic_sites, tmp_path
) -> None:
    config = RunConfig(
        rounds=1, min_sites=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=0.2)
    )
    runs = tmp_path / "runs"
    with pytest.raises(FedscanError, match="only 0 of the required 2 sites trained") as raised:
        grid = _grid(synthetic_sites, tmp_path / "state", 2, [LOOSE_DELTA_POLICY] * 2)
        run_federation(grid, config, RunDirectory.create(runs))
    assert raised.value.code == "quorum-lost"
    run_dir = next(runs.iterdir())
    line = json.loads((run_dir / "metrics.jsonl").read_text())
    assert {r["reason"].split(":")[0] for r in line["refusals"]} == {"delta-too-large"}
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_a_site_out_of_budget_leaves_and_the_run_goes_on_or_ends_cleanly(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # site-2's lifetime budget equals one run: after run A, it refuses every later round.
    tight = PrivacyPolicy(
        max_epsilon_per_run=8.0, max_epsilon_lifetime=8.0, delta=1e-4, min_samples=1
    )
    grid = _grid(synthetic_sites, tmp_path / "state", policies=[OPEN_POLICY, OPEN_POLICY, tight])
    config = RunConfig(
        rounds=1,
        min_sites=2,
        train=FAST,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        cross_site=False,
    )
    first = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    assert sorted(first.history[0]["train"]) == ["site-0", "site-1", "site-2"]
    second = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    assert sorted(second.history[0]["train"]) == ["site-0", "site-1"]
    # A refusal carries no site record: a site never seen in this run shows as its node id.
    assert [
        (r["site"], r["reason"].split(":")[0])
        for r in second.history[0]["refusals"]
        if r["phase"] == "train"
    ] == [("node-102", "privacy-budget-exhausted")]
    strict = RunConfig(
        rounds=1,
        min_sites=3,
        train=FAST,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        cross_site=False,
    )
    with pytest.raises(FedscanError, match="Round 1: only 2 of the required 3") as raised:
        run_federation(grid, strict, RunDirectory.create(tmp_path / "runs"))
    assert raised.value.code == "quorum-lost"


def test_central_dp_accounts_every_released_round(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=2,
        min_sites=3,
        train=FAST,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        central_noise_multiplier=1.0,
        central_clip_norm=0.05,
        cross_site=False,
    )
    result = run_federation(
        _grid(synthetic_sites, tmp_path / "state"), config, RunDirectory.create(tmp_path / "runs")
    )
    central = [line["central_epsilon"] for line in result.history]
    assert central[0] < central[1]
    assert central[1] == pytest.approx(epsilon_spent([(1.0, 1.0, 2)], 1e-5, accountant="rdp"))


def test_central_dp_aggregate_is_the_equal_weight_mean_of_clipped_updates(
    flower_identity, tmp_path: Path
) -> None:
    run_log = RunLog(RunDirectory.create(tmp_path), "small-cnn", 1)
    strategy = RecordingCentralDP(
        run_log,
        noise_multiplier=1e-9,
        clip_norm=1.0,
        delta=1e-5,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=1,
    )
    strategy.current_arrays = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))})
    updates = [
        ([3.0, 4.0, 0, 0], 1000),
        ([0.1, 0, 0, 0], 1),
        ([0, 0, 0, 2.0], 1),
    ]  # norms 5, 0.1, 2
    request = instruction(RecordDict(), "train")
    replies = [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(np.array(u, dtype=np.float32))}),
                    "metrics": MetricRecord({"num-examples": n}),
                    "site": ConfigRecord({"name": f"s{i}", VERSION: __version__}),
                }
            ),
            reply_to=request,
        )
        for i, (u, n) in enumerate(updates)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    clipped = np.array(
        [[0.6, 0.8, 0, 0], [0.1, 0, 0, 0], [0, 0, 0, 1.0]]
    )  # each scaled to norm ≤ 1
    assert np.allclose(
        arrays["w"].numpy(), clipped.mean(axis=0), atol=1e-6
    )  # sizes ignored: equal weights
    assert strategy.num_sampled_clients == 3 and run_log.central_epsilon > 0


def test_central_dp_needs_fedavg() -> None:
    with pytest.raises(ConfigError, match="fedavg"):
        RunConfig(strategy="fedprox", central_noise_multiplier=1.0)


class SignFlipper:
    """Wraps a ClientApp: node ``byzantine`` sends its update sign-flipped and scaled ×``scale``."""

    def __init__(self, app, byzantine: int, scale: float = 50.0) -> None:
        self.app, self.byzantine, self.scale = app, byzantine, scale

    def __call__(self, msg: Message, context) -> Message:
        reply = self.app(msg, context)
        if (
            context.node_id == self.byzantine
            and msg.metadata.message_type == "train"
            and not reply.has_error()
        ):
            sent = msg.content["arrays"].to_torch_state_dict()
            flipped = {
                k: sent[k] - self.scale * (v - sent[k]) if v.is_floating_point() else v
                for k, v in reply.content["arrays"].to_torch_state_dict().items()
            }
            reply.content["arrays"] = ArrayRecord(flipped)
        return reply


@pytest.mark.parametrize(  # krum in the suite; median and trimmed mean (≈ 16-20 s each) -m slow
    "strategy",
    [
        pytest.param("median", marks=pytest.mark.slow),
        pytest.param("trimmed-mean", marks=pytest.mark.slow),
        "krum",
    ],
)
def test_robust_strategies_complete_and_the_gate_refuses_a_sign_flipped_update(
    strategy: str, flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=2,
        min_sites=2,
        strategy=strategy,
        train=FAST,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        norm_gate=5.0,
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    grid.client_app = SignFlipper(grid.client_app, byzantine=102)
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    for line in result.history:
        assert sorted(line["train"]) == [
            "site-0",
            "site-1",
        ]  # site-2's update never reached aggregation
        assert [(r["site"], r["reason"]) for r in line["refusals"]] == [
            ("site-2", "update-rejected: update-norm-outlier")
        ]
    assert json.loads((result.run_dir.path / "config.json").read_text())["strategy"] == strategy


# CI time (≈ 21 s): -m slow. The suite keeps seeded reproducibility through
# tests/test_formats.py::test_without_dp_the_same_seed_trains_what_0_1_trained (stored weights).
@pytest.mark.slow
def test_the_same_seed_gives_bit_identical_global_weights_without_dp(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # DP noise comes from the sites' own entropy by design; without DP everything follows the run's
    # seed, and replies reach aggregation ordered by site, not by arrival.
    config = RunConfig(
        rounds=2,
        min_sites=3,
        train=FAST,
        cross_site=False,
        seed=7,
        privacy=PrivacyConfig(enabled=False),
    )
    finals = []
    for attempt in range(2):
        grid = _grid(synthetic_sites, tmp_path / f"state-{attempt}")
        grid.contexts = dict(reversed(list(grid.contexts.items())))  # sites answer in another order
        result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
        finals.append(load_checkpoint(result.final_model)[0].state_dict())
    assert all(torch.equal(finals[0][key], finals[1][key]) for key in finals[0])
