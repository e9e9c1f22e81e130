"""Segmentation in an in-process federation: DP U-Net, pooled Dice from counts, evaluate and
report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.local_evaluation import evaluate_checkpoint
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ConfigError
from fedscan.common.metrics.segmentation import OverlapCounts, evaluate_segmentation
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.report import build_report
from fedscan.server.rundir import RunDirectory
from tests.helpers import COARSE_POLICY, LoopbackGrid, site_resolver

SITES = ("site-0", "site-1", "site-2")


@pytest.fixture(scope="module")
def dp_run(synthetic_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from fedscan.server.inprocess import flower_identity

    root = tmp_path_factory.mktemp("segmentation")
    sources = [
        FolderSource(name, str(path)) for name, path in zip(SITES, synthetic_sites, strict=True)
    ]
    # metrics = "coarse": exact counts, to compare with the masks (the DP release of overlap
    # counts is tested in tests/client/test_metric_release.py)
    coarse = [COARSE_POLICY] * len(sources)
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, root / "state", coarse), device="cpu"), len(sources)
    )
    config = RunConfig(
        rounds=2,
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        train=TrainSettings(
            model="unet", task="segmentation", local_epochs=1, batch_size=8, learning_rate=0.1
        ),
    )
    with flower_identity():
        result = run_federation(grid, config, RunDirectory.create(root / "runs"))
    return {"result": result, "sources": sources, "state": root / "state", "config": config}


def test_the_pooled_dice_is_the_dice_of_every_site_s_validation_masks_together(
    dp_run: dict,
) -> None:
    result = dp_run["result"]
    final = result.history[-1]
    model, meta = load_checkpoint(result.final_model)
    assert meta["model"] == "unet"
    direct = OverlapCounts()
    for source in dp_run["sources"]:
        _, counts = evaluate_segmentation(
            model, source.load(64, masks=True).val, device=torch.device("cpu")
        )
        direct = direct + counts
    pooled = final["pooled"]
    assert (pooled["intersection"], pooled["predicted"], pooled["truth"]) == (
        direct.intersection,
        direct.predicted,
        direct.truth,
    )
    assert pooled["dice"] == pytest.approx(direct.dice) and pooled["iou"] == pytest.approx(
        direct.iou
    )
    for site in SITES:
        metrics = final["evaluate"][site]
        assert {"dice", "iou", "hd95", "loss"} <= set(metrics)
        assert not any(
            key.startswith("seg-") for key in metrics
        )  # the counts went into the pooled figures
    assert {"dice", "iou"} <= set(final["aggregated"]) and "auc" not in final["aggregated"]


def test_every_round_of_the_unet_is_in_each_ledger_within_the_budget(dp_run: dict) -> None:
    result = dp_run["result"]
    for site in SITES:
        releases = PrivacyLedger(dp_run["state"] / site).releases(result.run_dir.run_id)
        assert [release.round for release in releases] == [1, 2]
        assert all(release.noise_multiplier > 0 for release in releases)
        spent = result.history[-1]["epsilon"][site]
        ledger = PrivacyLedger(dp_run["state"] / site)
        assert spent == pytest.approx(ledger.epsilon(1e-4, run_id=result.run_dir.run_id), rel=1e-6)
        assert spent <= 8.0 * 1.001


def test_evaluate_scores_a_segmentation_checkpoint_on_a_site_folder(
    dp_run: dict, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    result = evaluate_checkpoint(
        dp_run["result"].final_model,
        f"dicom:{synthetic_sites[0]}",
        split="val",
        device="cpu",
        predictions=tmp_path / "overlaps.csv",
    )
    assert result["task"] == "segmentation" and result["n"] == 40
    assert 0.0 <= result["dice"] <= 1.0 and 0.0 <= result["iou"] <= result["dice"]
    assert result["dice"] == pytest.approx(
        2 * result["intersection"] / (result["predicted"] + result["truth"])
    )
    rows = (tmp_path / "overlaps.csv").read_text().splitlines()
    assert rows[0] == "key,true_pixels,predicted_pixels,dice" and len(rows) == 41
    with pytest.raises(ConfigError, match="dicom:DIR"):
        evaluate_checkpoint(
            dp_run["result"].final_model, "npz:/nowhere.npz", split="val", device="cpu"
        )


def test_the_report_shows_dice_per_round_and_per_site(dp_run: dict) -> None:
    report, card = build_report(dp_run["result"].run_dir.path)
    text = card.read_text()
    assert "Task: segmentation" in text and "| site | Dice | IoU | Hausdorff-95 (px)" in text
    assert "Dice per round" in report.read_text() and "pooled Dice" in report.read_text()
    config = json.loads((dp_run["result"].run_dir.path / "config.json").read_text())
    assert config["train"]["task"] == "segmentation"


def test_the_model_card_gives_a_dp_release_s_dice_interval_and_calls_it_noised() -> None:
    from fedscan.server.report_segmentation import card_lines

    pooled = {"dice": 0.61, "iou": 0.44, "n": 48.0, "dice-ci-low": 0.35, "dice-ci-high": 0.83}
    noised = "\n".join(card_lines({"history": [{"pooled": pooled, "evaluate": {}}]}))
    assert "Dice 0.610, IoU 0.440 over 48 validation images" in noised
    assert "95 % interval for the sites' noise is 0.350–0.830" in noised
    assert "released under DP, so noised" in noised and "exactly" not in noised
    swamped = {**pooled, "dice": math.nan, "dice-ci-low": 0.0, "dice-ci-high": 1.0}
    assert "Dice —" in "\n".join(card_lines({"history": [{"pooled": swamped}]}))
    exact = "\n".join(card_lines({"history": [{"pooled": {"dice": 0.6, "iou": 0.4, "n": 48.0}}]}))
    assert "exactly the scores of the pooled masks" in exact and "interval" not in exact
