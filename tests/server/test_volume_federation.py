"""Volumes in a federation: a DP 3-D U-Net in-process (pooled Dice from every site's counts), and
a DP 3-D classifier on Flower's Simulation Engine over synthetic CT hospitals (separate
processes), with ε per site and every series a patient's sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedscan.client.app import make_client_app
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource, volume_input
from fedscan.common.data.synth_ct import CTConfig, generate_ct_sites
from fedscan.common.metrics.segmentation import OverlapCounts, evaluate_segmentation
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.helpers import COARSE_POLICY, LoopbackGrid, site_resolver
from tests.test_simulation_engine import _leftover_processes, _only_run, _simulate

# Exact counts (metrics = "coarse"), to compare with the volumes' masks.
COARSE = [COARSE_POLICY] * 3


@pytest.fixture(scope="module")
def ct_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic CT hospitals, 10 series each (site 0 also its three broken series)."""
    return generate_ct_sites(tmp_path_factory.mktemp("ct"), CTConfig(3, 10, seed=5))


# CI time (31 s): the 3-D classifier federation stays in the suite; this one is -m slow.
@pytest.mark.slow
def test_a_dp_3d_unet_federation_pools_the_dice_of_every_site_s_volumes(
    ct_sites: list[Path], tmp_path: Path
) -> None:
    from fedscan.server.inprocess import flower_identity

    sources = [FolderSource(p.name, str(p), cache_dir=str(tmp_path / "cache")) for p in ct_sites]
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, tmp_path / "state", COARSE), device="cpu"), 3
    )
    config = RunConfig(
        rounds=1,
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        train=TrainSettings(model="unet3d", task="segmentation", local_epochs=1, batch_size=4),
    )
    with flower_identity():
        result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    final = result.history[-1]
    model, meta = load_checkpoint(result.final_model)
    assert meta["model"] == "unet3d"
    target = volume_input(get_model_spec("unet3d"))
    direct = OverlapCounts()
    loaded = [source.load(64, masks=True, volume=target) for source in sources]
    for data in loaded:
        assert data.val.images.shape[1:] == (1, 32, 64, 64) and data.val.masks is not None
        assert len(data.train) + len(data.val) == 10  # one sample per series
        direct = direct + evaluate_segmentation(model, data.val, device=torch.device("cpu"))[1]
    pooled = final["pooled"]
    assert (pooled["intersection"], pooled["predicted"], pooled["truth"]) == (
        direct.intersection,
        direct.predicted,
        direct.truth,
    )
    assert direct.truth > 0  # the validation volumes hold nodules
    assert all(0 < eps <= 8.0 * 1.001 for eps in final["epsilon"].values())
    # Site 0's three broken series were refused with their codes, and only those.
    assert loaded[0].rejected == {
        "SERIES_DUPLICATE_POSITION": 1,
        "SERIES_LOCALIZER": 1,
        "SERIES_MISSING_SLICE": 1,
    }


def test_a_dp_3d_classifier_trains_on_the_simulation_engine_over_ct_series(
    tmp_path: Path,
) -> None:
    result = _simulate(
        tmp_path,
        "--data",
        "synthetic-ct",
        "--sites",
        "2",
        "--images-per-site",
        "10",
        "--rounds",
        "1",
        "--local-epochs",
        "1",
        "--delta",
        "1e-4",
        "--no-cross-site",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model cnn3d" in result.stdout and "pooled validation AUC" in result.stdout
    run_dir = _only_run(tmp_path)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1]
    assert sorted(lines[-1]["epsilon"]) == ["site-0", "site-1"]
    assert all(0 < eps <= 8 * 1.001 for eps in lines[-1]["epsilon"].values())
    # One cache entry per series (10 + 10 accepted), none per slice.
    assert len(list((tmp_path / "cache").rglob("*.entry"))) == 20
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert not _leftover_processes(tmp_path)
