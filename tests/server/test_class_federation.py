"""Multiclass and multilabel federations in process (ServerApp logic + ClientApps over a loopback
Grid, DP on): per-class pooled figures from summed evidence, a checkpoint with a head per class,
and a site whose labels name only undeclared classes refusing with a code while the run goes on."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedscan.client.app import make_client_app
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.data.synth import FINDINGS, MULTICLASS_CLASSES, SynthConfig, generate_sites
from fedscan.common.data.synth_findings import CLASS_COLUMN
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.metrics.classwise import ClassEvidence
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.tasks import MULTICLASS, MULTILABEL, LabelScheme
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.helpers import OPEN_POLICY, LoopbackGrid, site_resolver

PRIVATE = PrivacyConfig(epsilon=8.0, delta=1e-4)


def _config(task: str, classes: tuple[str, ...], min_sites: int = 3) -> RunConfig:
    train = TrainSettings(task=task, classes=classes, local_epochs=1, batch_size=16, augment=False)
    # One round: its final evaluation is what the pool sums (CI time: ≈ 12 s less per test).
    return RunConfig(rounds=1, min_sites=min_sites, train=train, cross_site=False, privacy=PRIVATE)


def _run(
    sites: list[Path],
    config: RunConfig,
    tmp_path: Path,
    labels: dict[str, LabelSpec] | None = None,
    metrics: str = "dp",
) -> tuple[list[dict], Path]:
    """``metrics``: the sites' metric release policy (coarse: exact sums to check against)."""
    specs = labels or {}
    sources = [FolderSource(s.name, str(s), specs.get(s.name, LabelSpec())) for s in sites]
    policies = [replace(OPEN_POLICY, metrics=metrics)] * len(sources)
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, tmp_path / "state", policies), device="cpu"), 3
    )
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    lines = [
        json.loads(x) for x in (result.run_dir.path / "metrics.jsonl").read_text().splitlines()
    ]
    return lines, result.run_dir.path


def test_a_multiclass_federation_pools_every_figure_per_class(
    flower_identity, tmp_path: Path
) -> None:
    sites = generate_sites(tmp_path / "data", SynthConfig(3, 40, 0, task=MULTICLASS))
    named = {site.name: LabelSpec(label_column=CLASS_COLUMN) for site in sites}
    lines, run_dir = _run(
        sites, _config(MULTICLASS, MULTICLASS_CLASSES), tmp_path, named, metrics="coarse"
    )
    pooled = lines[-1]["pooled"]
    assert list(pooled["classes"]) == list(MULTICLASS_CLASSES)
    assert all(found["positives"] > 0 for found in pooled["classes"].values())  # each class read
    assert pooled["auc"] == pooled["macro-auc"] and 0 <= pooled["balanced-accuracy"] <= 1
    confusion = np.array(pooled["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == lines[-1]["aggregated"]["num-examples"]
    assert np.isclose(pooled["accuracy"], np.trace(confusion) / confusion.sum())
    document = json.loads((run_dir / "histograms.json").read_text())
    scheme = LabelScheme(MULTICLASS, MULTICLASS_CLASSES)
    first, *rest = [ClassEvidence.from_lists(scheme, s) for s in document["sites"].values()]
    summed = sum(rest, first).to_lists()
    assert summed == document["pooled"]  # the pool is the sum of the sites' evidence, exactly
    model, meta = load_checkpoint(run_dir / "final.pt")
    assert meta["task"] == MULTICLASS and meta["classes"] == list(MULTICLASS_CLASSES)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 4)
    assert "Task: multiclass" in (run_dir / "model_card.md").read_text()
    from fedscan.client.local_evaluation import evaluate_checkpoint

    table = tmp_path / "predictions.csv"
    found = evaluate_checkpoint(
        run_dir / "final.pt",
        f"dicom:{sites[0]}",
        split="val",
        device="cpu",
        labels=LabelSpec(label_column=CLASS_COLUMN),
        predictions=table,
    )
    assert found["task"] == MULTICLASS and found["n"] == 40 and np.sum(found["confusion"]) == 40
    header = table.read_text().splitlines()[0].split(",")
    assert header == ["key", "truth", *(f"score:{name}" for name in MULTICLASS_CLASSES)]


def test_a_site_labelled_with_undeclared_findings_refuses_and_the_run_goes_on(
    flower_identity,
    tmp_path: Path,
) -> None:
    sites = generate_sites(tmp_path / "data", SynthConfig(3, 40, 1, task=MULTILABEL))
    labels = sites[2] / "labels.csv"
    with open(labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(labels, "w", newline="") as handle:  # another hospital's vocabulary, one column
        writer = csv.writer(handle)
        writer.writerow(["file", "findings", "mask"])
        writer.writerows([[row["file"], "pneumothorax|mass", row["mask"]] for row in rows])
    named = {"site-2": LabelSpec(label_column="findings")}
    lines, run_dir = _run(sites, _config(MULTILABEL, FINDINGS, min_sites=2), tmp_path, named)
    assert all(sorted(line["train"]) == ["site-0", "site-1"] for line in lines)
    # A refusal carries no site name (an error reply holds only the code): the node's number.
    others = [r for line in lines for r in line.get("refusals", []) if r["site"] != "site-0"]
    refusals = [r for r in others if r["site"] != "site-1"]
    assert refusals and all(r["reason"].startswith("data-error:") for r in refusals)
    assert {r["phase"] for r in refusals} == {"train", "evaluate"}
    pooled = lines[-1]["pooled"]  # from the sites' DP releases (the default metric policy)
    assert list(pooled["classes"]) == list(FINDINGS) and 0 <= pooled["macro-auc"] <= 1
    assert lines[-1]["metrics_policy"] == {"site-0": "dp", "site-1": "dp"}
    budget = OPEN_POLICY.max_epsilon_metrics_per_run
    assert all(0 < found <= budget * 1.001 for found in lines[-1]["metrics_epsilon"].values())
    assert set(json.loads((run_dir / "final.json").read_text())["thresholds"]) == set(FINDINGS)


# CI time (24 s): the multiclass federation stays in the suite; this one is -m slow.
@pytest.mark.slow
def test_a_multilabel_cross_site_matrix_gives_macro_auc_per_cell_and_per_class_detail(
    flower_identity, tmp_path: Path
) -> None:
    from fedscan.common.metrics.classwise import pooled_class_metrics
    from fedscan.common.metrics.crosssite import CrossSiteMatrix

    sites = generate_sites(tmp_path / "data", SynthConfig(3, 40, 2, task=MULTILABEL))
    config = replace(_config(MULTILABEL, FINDINGS), cross_site=True)
    _, run_dir = _run(sites, config, tmp_path, metrics="coarse")
    document = json.loads((run_dir / "cross_site.json").read_text())
    matrix = CrossSiteMatrix.from_json(document)
    assert matrix.models[0] == "global" and len(matrix.models) == 4  # global + 3 fine-tuned
    for row in matrix.cells.values():
        for cell in row.values():
            assert cell["auc"] == cell["macro-auc"] and set(cell["classes"]) == set(FINDINGS)
            defined = [v for v in cell["classes"].values() if v is not None and v == v]
            assert cell["auc"] == pytest.approx(np.mean(defined))  # undefined: no positive
    for model, pooled in matrix.pooled.items():
        assert list(pooled["classes"]) == list(FINDINGS) and pooled["auc"] == pooled["macro-auc"]
        assert 0.0 <= pooled["auc"] <= 1.0, model
    # The pooled global column is the pooled figure of the run's own last evaluation, summed the
    # same way (the same model scored at the same sites).
    histograms = json.loads((run_dir / "histograms.json").read_text())
    scheme = LabelScheme(MULTILABEL, FINDINGS)
    summed = ClassEvidence.from_lists(scheme, histograms["pooled"])
    expected = pooled_class_metrics(summed)["macro-auc"]
    assert matrix.pooled["global"]["auc"] == expected
