"""A federation warm-started from an earlier run's final.pt: the sites receive the file's weights
as round 1's global model, and the file's SHA-256 is in every request, the run's records, its
events and its model card; a file the model cannot use fails the run with one line, before any
site is asked anything."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from fedscan.client.app import make_client_app
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ModelError
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import (
    CONFIG_FILE,
    INIT_WEIGHTS_FILE,
    MODEL_CARD_FILE,
    RUN_CONFIG_FILE,
    Event,
    RunDirectory,
)
from tests.helpers import LoopbackGrid, site_resolver

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1" / "run"
FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)


def _grid(sites: list[Path], state: Path) -> LoopbackGrid:
    sources = [FolderSource(f"site-{i}", str(path)) for i, path in enumerate(sites[:2])]
    return LoopbackGrid(make_client_app(site_resolver(sources, state), device="cpu"), 2)


def _run(tmp_path: Path, weights: Path, grid: LoopbackGrid) -> RunDirectory:
    config = RunConfig(
        rounds=1,
        min_sites=2,
        cross_site=False,
        train=FAST,
        init_weights=str(weights),
        privacy=PrivacyConfig(enabled=False),  # DP is the sites' own: here, only the start
    )
    run_dir = RunDirectory.create(tmp_path / "runs")
    run_federation(grid, config, run_dir)
    return run_dir


def test_sites_receive_the_earlier_runs_weights_and_every_record_names_their_hash(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    weights = tmp_path / "earlier" / "final.pt"
    weights.parent.mkdir()
    for name in ("final.pt", "final.json"):  # an earlier run's model and what it says it is
        shutil.copy(FIXTURE_RUN / name, weights.parent / name)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()

    grid = _grid(synthetic_sites, tmp_path / "state")

    run_dir = _run(tmp_path, weights, grid)

    saved = torch.load(weights, weights_only=True)
    first = [m for m in grid.delivered if m.metadata.message_type == "train"][:2]
    for message in first:
        received = message.content[protocol.ARRAYS].to_torch_state_dict()
        assert all(torch.equal(received[name], saved[name]) for name in saved)
        assert message.content[protocol.CONFIG]["init-weights-sha256"] == digest
        assert str(weights) not in json.dumps(dict(message.content[protocol.CONFIG]))
    assert json.loads(run_dir.file(CONFIG_FILE).read_text())["init_weights_sha256"] == digest
    assert json.loads(run_dir.file(RUN_CONFIG_FILE).read_text())["init-weights-sha256"] == digest
    (event,) = [e for e in run_dir.read_events() if e["event"] == Event.INIT_WEIGHTS_LOADED]
    assert (event["loaded"], event["new"], event["ignored"], event["sha256"]) == (14, 0, 0, digest)
    assert json.loads(run_dir.file(INIT_WEIGHTS_FILE).read_text())["sha256"] == digest
    card = run_dir.file(MODEL_CARD_FILE).read_text()
    assert (
        f"- Starting weights: `final.pt` (fedscan small-cnn of run 20261201-210417-5947b4), "
        f"SHA-256 `{digest}`: 14 parameters loaded" in card
    )


def test_weights_that_fit_nothing_fail_the_run_before_any_site_is_asked(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    weights = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, weights)
    grid = _grid(synthetic_sites, tmp_path / "state")

    with pytest.raises(ModelError, match="matches none of the 14 parameters"):
        _run(tmp_path, weights, grid)

    assert grid.delivered == []
    (run_dir,) = list((tmp_path / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "matches none" in status["reason"]
    assert "\n" not in status["reason"]
