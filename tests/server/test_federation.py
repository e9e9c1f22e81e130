"""An in-process federation: ServerApp logic + ClientApps over a loopback Grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from fedscan.client.app import make_client_app
from fedscan.common.checkpoint import load_checkpoint
from fedscan.common.config import RunConfig
from fedscan.common.errors import FedscanError
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.sources import FolderSource
from fedscan.common.training import TrainSettings
from fedscan.server.app import QuorumError, run_federation
from fedscan.server.recorder import weighted_mean
from fedscan.server.rundir import RunDirectory
from tests.helpers import LoopbackGrid

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)


@pytest.fixture()
def flower_identity():
    """Strategies build messages with the process' task identity; a Flower process sets it."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None


def _grid(sites: list[Path], count: int = 3) -> LoopbackGrid:
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(sites[:count])]
    app = make_client_app(lambda context: sources[int(context.node_config["partition-id"])], device="cpu")
    return LoopbackGrid(app, count)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam"])
def test_federation_writes_run_directory_and_every_site_reports(
        strategy: str, flower_identity, synthetic_sites: list[Path], tmp_path: Path) -> None:
    config = RunConfig(rounds=2, min_sites=3, strategy=strategy, train=FAST,
                       privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    grid = _grid(synthetic_sites)
    result = run_federation(grid, config, RunDirectory.create(tmp_path))
    lines = [json.loads(line) for line in (result.run_dir.path / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2]
    for line in lines:
        assert sorted(line["evaluate"]) == sorted(line["train"]) == ["site-0", "site-1", "site-2"]
        assert all(0 < eps <= 8.0 * 1.001 for eps in line["epsilon"].values())
    assert all(lines[1]["epsilon"][s] > lines[0]["epsilon"][s] for s in lines[0]["epsilon"])
    assert json.loads((result.run_dir.path / "config.json").read_text())["strategy"] == strategy
    model, meta = load_checkpoint(result.final_model)
    assert meta["model"] == "small-cnn" and meta["rounds"] == 2
    assert model(torch.rand(2, 1, 64, 64)).shape == (2,)
    assert all(m.metadata.message_type in ("train", "evaluate") for m in grid.delivered)
    assert all(m.content["config"]["fedscan-version"] for m in grid.delivered)


def test_a_refusing_site_is_recorded_and_the_round_goes_on(
        flower_identity, synthetic_sites: list[Path], tmp_path: Path) -> None:
    config = RunConfig(rounds=1, min_sites=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    folders = [*synthetic_sites[:2], tmp_path / "does-not-exist"]  # site-2 lost its data
    sources = [FolderSource(f"site-{i}", str(folder)) for i, folder in enumerate(folders)]
    app = make_client_app(lambda context: sources[int(context.node_config["partition-id"])], device="cpu")
    grid = LoopbackGrid(app, 3)
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    line = result.history[0]
    assert sorted(line["train"]) == ["site-0", "site-1"]
    assert {r["phase"] for r in line["refusals"]} == {"train", "evaluate"}
    assert all("does-not-exist" not in r["reason"] for r in line["refusals"])


def test_too_few_sites_ends_within_the_join_timeout(flower_identity, synthetic_sites, tmp_path) -> None:
    config = RunConfig(rounds=1, min_sites=3, join_timeout_s=0.1, train=FAST)
    with pytest.raises(QuorumError, match="3 required"):
        run_federation(_grid(synthetic_sites, count=2), config, RunDirectory.create(tmp_path))


def test_weighted_mean_ignores_sites_where_the_metric_is_undefined() -> None:
    per_site = {"a": {"auc": 0.8, "num-examples": 30}, "b": {"auc": 0.5, "num-examples": 10},
                "c": {"auc": math.nan, "num-examples": 60}}
    assert weighted_mean(per_site, "auc") == pytest.approx((0.8 * 30 + 0.5 * 10) / 40)


def test_a_run_where_every_site_refuses_fails_clearly(flower_identity, synthetic_sites, tmp_path) -> None:
    config = RunConfig(rounds=1, min_sites=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=0.2))
    with pytest.raises(FedscanError, match="No site completed") as raised:
        run_federation(_grid(synthetic_sites, count=2), config, RunDirectory.create(tmp_path))
    assert raised.value.code == "run-failed"
    line = json.loads((next(tmp_path.iterdir()) / "metrics.jsonl").read_text())
    assert {r["reason"].split(":")[0] for r in line["refusals"]} == {"delta-too-large"}
