"""A label map of three structures in an in-process DP federation: every round's per-structure
Dice comes from the sites' summed counts, the checkpoint keeps its structures, evaluate and the
report show each one, and an image whose mask holds an undeclared label is rejected by code while
its site trains on the rest (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedscan.client.app import make_client_app
from fedscan.client.local_evaluation import evaluate_checkpoint
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.ingest.rejections import Reason
from fedscan.common.metrics.confusion import LabelOverlaps
from fedscan.common.metrics.segmentation import evaluate_label_map
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.tasks import LabelScheme
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.report import build_report
from fedscan.server.rundir import RunDirectory
from tests.helpers import COARSE_POLICY, LoopbackGrid, site_resolver

SITES = ("site-0", "site-1", "site-2")
STRUCTURES = ("opacity", "heart", "nodule")
SCHEME = LabelScheme("segmentation", STRUCTURES)


@pytest.fixture(scope="module")
def label_map_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from fedscan.server.inprocess import flower_identity

    root = tmp_path_factory.mktemp("label-maps")
    folders = generate_sites(
        root / "sites", SynthConfig(3, 24, seed=5, task="segmentation", labels=3)
    )
    # One image at site-2 paints a fourth structure the run did not declare.
    stray = folders[2] / "masks" / "IM00003.png"
    values = np.asarray(Image.open(stray)).copy()
    values[:4, :4] = 4
    Image.fromarray(values).save(stray)
    sources = [FolderSource(n, str(p)) for n, p in zip(SITES, folders, strict=True)]
    grid = LoopbackGrid(
        # exact counts (metrics = "coarse"), to compare with the masks; DP: the last test
        make_client_app(
            site_resolver(sources, root / "state", [COARSE_POLICY] * len(sources)), device="cpu"
        ),
        len(sources),
    )
    config = RunConfig(
        rounds=1,  # its final evaluation is what the pool sums (CI time)
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        train=TrainSettings(
            model="unet",
            task="segmentation",
            classes=STRUCTURES,
            local_epochs=1,
            batch_size=8,
            learning_rate=0.1,
        ),
    )
    with flower_identity():
        result = run_federation(grid, config, RunDirectory.create(root / "runs"))
    return {"result": result, "sources": sources, "folders": folders}


def test_each_structure_s_pooled_dice_is_that_of_every_site_s_masks_together(
    label_map_run: dict,
) -> None:
    result = label_map_run["result"]
    model, meta = load_checkpoint(result.final_model)
    assert meta["task"] == "segmentation" and meta["classes"] == list(STRUCTURES)
    direct = LabelOverlaps.empty(3)
    for source in label_map_run["sources"]:
        val = source.load(64, masks=True, scheme=SCHEME).val
        _, _, counts = evaluate_label_map(model, val, STRUCTURES, device=torch.device("cpu"))
        direct = direct + counts
    pooled = result.history[-1]["pooled"]
    expected = direct.metrics(STRUCTURES)
    for name in STRUCTURES:
        found = pooled["labels"][name]
        assert [found[k] for k in ("true-positives", "false-positives", "false-negatives")] == [
            expected["labels"][name][k]
            for k in ("true-positives", "false-positives", "false-negatives")
        ]
        assert found["dice"] == pytest.approx(expected["labels"][name]["dice"], nan_ok=True)
    assert pooled["dice"] == pytest.approx(expected["mean-dice"])
    assert 0.0 <= pooled["foreground-dice"] <= 1.0
    for metrics in result.history[-1]["evaluate"].values():
        assert "label-overlaps" not in metrics  # the counts went into the pooled figures


def test_an_undeclared_label_rejects_its_image_and_the_site_trains_on_the_rest(
    label_map_run: dict,
) -> None:
    from fedscan.common.ingest import IngestSettings, ingest_site
    from fedscan.common.ingest.labels import LabelSpec

    folder = label_map_run["folders"][2]
    samples, report = ingest_site(
        folder, LabelSpec(), IngestSettings(size=64), masks=True, scheme=SCHEME
    )
    assert report.rejected_by_reason() == {Reason.MASK_UNKNOWN_LABEL.value: 1}
    assert len(samples.labels) == 23
    assert set(np.unique(samples.masks)) <= {0.0, 1.0, 2.0, 3.0}
    trained = label_map_run["result"].history[-1]["train"]
    assert set(trained) == set(SITES)


def test_evaluate_and_the_report_show_every_structure(label_map_run: dict, tmp_path: Path) -> None:
    result = label_map_run["result"]
    found = evaluate_checkpoint(
        result.final_model,
        f"dicom:{label_map_run['folders'][0]}",
        split="val",
        device="cpu",
        predictions=tmp_path / "dice.csv",
    )
    assert set(found["labels"]) == set(STRUCTURES) and found["n"] == 24
    assert found["dice"] == pytest.approx(found["mean-dice"])
    rows = (tmp_path / "dice.csv").read_text().splitlines()
    assert rows[0] == "key,dice:opacity,dice:heart,dice:nodule" and len(rows) == 25
    report, card = build_report(result.run_dir.path)
    text = card.read_text()
    assert "| structure | Dice | IoU |" in text and "| heart |" in text
    assert "Dice heart" in report.read_text()


def test_under_dp_metric_releases_each_structure_s_pooled_dice_comes_from_noisy_counts(
    tmp_path: Path,
) -> None:
    from fedscan.server.inprocess import flower_identity

    folders = generate_sites(
        tmp_path / "sites", SynthConfig(3, 16, seed=6, task="segmentation", labels=3)
    )
    sources = [FolderSource(n, str(p)) for n, p in zip(SITES, folders, strict=True)]
    grid = LoopbackGrid(  # the sites' default policy: metrics = "dp"
        make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu"), len(sources)
    )
    config = RunConfig(
        rounds=1,
        min_sites=3,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        train=TrainSettings(
            model="unet", task="segmentation", classes=STRUCTURES, local_epochs=1, batch_size=8
        ),
    )
    with flower_identity():
        result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    final = result.history[-1]
    pooled = final["pooled"]
    assert set(pooled["labels"]) == set(STRUCTURES)
    assert all(0.0 <= pooled["labels"][name]["dice"] <= 1.0 for name in STRUCTURES)
    assert "foreground-dice" not in pooled  # a DP release carries the structures' counts only
    for metrics in final["evaluate"].values():
        assert metrics["dp-noise-std"] > 0 and "dp-label-overlaps" not in metrics
