"""The classical models in an in-process federation: federated standardisation and DP accounting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.models.classical_model import MEAN_KEY, SCALE_KEY
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.helpers import LoopbackGrid, site_resolver

SITES = ("site-0", "site-1", "site-2")


def _federation(sites: list[Path], state: Path) -> tuple[LoopbackGrid, list[FolderSource]]:
    sources = [FolderSource(name, str(path)) for name, path in zip(SITES, sites, strict=True)]
    return LoopbackGrid(
        make_client_app(site_resolver(sources, state), device="cpu"), len(sources)
    ), sources


def test_without_dp_the_global_standardisation_is_the_pooled_one(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    options = "median=3,equalize=hist,roi=none,lbp-grid=2"
    config = RunConfig(
        rounds=1,
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(enabled=False),
        train=TrainSettings(model="lbp-logreg", local_epochs=1, batch_size=8, classical=options),
    )
    grid, sources = _federation(synthetic_sites, tmp_path / "state")
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    model, meta = load_checkpoint(result.final_model)
    assert meta["classical"] == options
    extractor = build_model("lbp-logreg", options=options, check_dp=False)
    pooled = np.concatenate([extractor.features(s.load(64).train.images).numpy() for s in sources])
    assert np.allclose(model.state_dict()[MEAN_KEY].numpy(), pooled.mean(axis=0), atol=1e-5)
    floor = 0.1 * 2.0 / np.sqrt(pooled.shape[1])  # C = lbp-grid for LBP features
    assert np.allclose(
        model.state_dict()[SCALE_KEY].numpy(), np.maximum(pooled.std(axis=0), floor), atol=1e-4
    )


def test_a_dp_svm_run_accounts_the_statistics_and_every_round_in_each_ledger(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=2,
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        train=TrainSettings(model="hog-svm", local_epochs=1, batch_size=8, learning_rate=0.02),
    )
    grid, _ = _federation(synthetic_sites, tmp_path / "state")
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    final = result.history[-1]
    for site in SITES:
        ledger = PrivacyLedger(tmp_path / "state" / site)
        releases = ledger.releases(result.run_dir.run_id)
        # feature statistics, the training count (client/counts.py), then the two rounds
        assert [r.round for r in releases] == [0, -1, 1, 2]
        assert releases[0].noise_multiplier == 10.0 and releases[0].sample_rate == 1.0
        spent = ledger.epsilon(1e-4, run_id=result.run_dir.run_id)
        assert final["epsilon"][site] == pytest.approx(spent, rel=1e-3) and spent <= 8.0 * 1.001
    # Every site sent its statistics and trained every round: nothing is missing.
    assert result.gaps == () and result.run_dir.read_status()["state"] == "completed"
    weights = load_checkpoint(result.final_model)[0].state_dict()["linear.weight"]
    assert bool(torch.isfinite(weights).all()) and float(weights.abs().sum()) > 0  # it trained
