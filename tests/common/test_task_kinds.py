"""Task kinds beyond binary (issue 19, the site side): the run's class list, labels read for each
kind from a CSV or an npz, undeclared classes rejected with their code, heads sized by the class
list, and one real DP-SGD step per model × kind. The binary forms stay as they were."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from fedscan.common.config import RunConfig
from fedscan.common.data.npz import load_npz_split
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.labels import LabelSpec, read_label_table
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.scan import IngestSettings, ingest_site
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import DpStep, finding_matrix, train_local
from fedscan.common.site_settings import SiteSettings
from fedscan.common.tasks import MULTICLASS, MULTILABEL, LabelScheme, findings_of
from fedscan.common.training_settings import TrainSettings, check_training

CLASSES = ("normal", "effusion", "nodule")
FINDINGS = ("effusion", "nodule", "cardiomegaly")


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def test_the_class_list_is_checked_and_the_binary_forms_do_not_change() -> None:
    settings = TrainSettings(task=MULTILABEL, classes=FINDINGS)
    check_training(settings)
    for bad, match in (
        (TrainSettings(task=MULTICLASS, classes=("only",)), "at least 2"),
        (TrainSettings(task=MULTILABEL, classes=("a", "a")), "repeat"),
        (TrainSettings(task=MULTILABEL, classes=("a,b",)), "no commas"),
        (TrainSettings(classes=("a", "b")), "classes is for task multiclass, multilabel or"),
        (TrainSettings(task=MULTILABEL, classes=("a",), model="unet"), "small-cnn"),
    ):
        with pytest.raises(ConfigError, match=match):
            check_training(bad)
    assert "classes" not in RunConfig().to_message() and "classes" not in RunConfig().to_flat()
    message = {**RunConfig().to_message(), "task": MULTICLASS, "classes": ",".join(CLASSES)}
    received = SiteSettings.from_message(message)  # a site reads the list in the run's order
    assert (received.train.task, received.train.classes) == (MULTICLASS, CLASSES)


def test_data_check_counts_samples_per_class_and_names_undeclared_ones(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedscan.cli.main import app

    generate_sites(tmp_path, SynthConfig(sites=1, images_per_site=60, seed=2, task=MULTILABEL))
    site = tmp_path / "site-0"
    args = ["data", "check", str(site), "--task", MULTILABEL, "--no-cache"]
    found = CliRunner().invoke(app, [*args, "--classes", "opacity,nodule,effusion,cardiomegaly"])
    assert found.exit_code == 0, found.output
    assert "Samples by class" in found.output and "cardiomegaly" in found.output
    refused = CliRunner().invoke(app, [*args, "--classes", "opacity,nodule,effusion"])
    assert refused.exit_code == 0 and "cardiomegaly" not in refused.output.split("by class")[-1]
    bad = CliRunner().invoke(app, [*args, "--classes", "a,a"])
    assert bad.exit_code == 2 and "repeat" in bad.output


def test_multiclass_labels_are_names_or_indices_and_undeclared_classes_are_kept_apart(
    tmp_path: Path,
) -> None:
    rows = [["a.png", "normal"], ["b.png", "Nodule"], ["c.png", "2"], ["d.png", "fracture"]]
    rows += [["e.png", "7"], ["f.png", ""]]
    _csv(tmp_path / "labels.csv", ["file", "label"], rows)
    table = read_label_table(LabelSpec(), tmp_path, scheme=LabelScheme(MULTICLASS, CLASSES))
    assert table.labels == {"a.png": 0, "b.png": 2, "c.png": 2}
    assert table.unknown == {"d.png", "e.png"} and set(table.invalid) == {"d.png", "e.png", "f.png"}


def test_multilabel_labels_from_columns_or_one_column_of_names(tmp_path: Path) -> None:
    scheme = LabelScheme(MULTILABEL, FINDINGS)
    header = ["file", "effusion", "nodule", "cardiomegaly", "label"]
    rows = [
        ["a.png", "1", "0", "1", ""],
        ["b.png", "0", "0", "0", ""],
        ["c.png", "x", "0", "0", ""],
    ]
    _csv(tmp_path / "labels.csv", header, rows)
    table = read_label_table(LabelSpec(), tmp_path, scheme=scheme)  # every finding has a column
    assert table.labels == {"a.png": 0b101, "b.png": 0} and "c.png" in table.invalid
    assert findings_of(table.labels["a.png"], FINDINGS) == ("effusion", "cardiomegaly")
    assert table.unknown == frozenset()

    named = LabelSpec(csv=str(tmp_path / "named.csv"), label_column="findings")
    rows = [["a.png", "nodule|effusion"], ["b.png", "none"], ["c.png", "nodule|fracture"]]
    _csv(tmp_path / "named.csv", ["file", "findings"], rows)
    table = read_label_table(named, tmp_path, scheme=scheme)
    assert table.labels == {"a.png": 0b011, "b.png": 0} and table.unknown == {"c.png"}


def test_label_columns_that_do_not_fit_the_run_say_what_to_change(tmp_path: Path) -> None:
    scheme = LabelScheme(MULTILABEL, FINDINGS)
    _csv(tmp_path / "labels.csv", ["file", "effusion", "nodule"], [["a.png", "1", "0"]])
    with pytest.raises(DataError, match="cardiomegaly have no column"):
        read_label_table(LabelSpec(label_columns=("effusion", "nodule")), tmp_path, scheme=scheme)
    with pytest.raises(DataError, match="lacks"):
        read_label_table(LabelSpec(label_columns=("effusion", "mass")), tmp_path, scheme=scheme)
    with pytest.raises(DataError, match="findings separated by"):  # no columns, no names column
        read_label_table(LabelSpec(), tmp_path, scheme=scheme)


def test_a_site_rejects_an_undeclared_class_with_its_code_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    (site,) = generate_sites(tmp_path, SynthConfig(sites=1, images_per_site=12, seed=3))
    with open(site / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = ["normal" if row["label"] == "0" else "nodule" for row in rows]
    names[0] = "fracture"  # a class the run did not declare
    table = [[row["file"], name, row["mask"]] for row, name in zip(rows, names, strict=True)]
    _csv(site / "labels.csv", ["file", "label", "mask"], table)  # masks: not images to label
    settings = IngestSettings(32, DecodeOptions(), cache_dir="")
    samples, report = ingest_site(
        site, LabelSpec(), settings, scheme=LabelScheme(MULTICLASS, CLASSES)
    )
    assert report.rejected_by_reason() == {Reason.LABEL_UNKNOWN_CLASS.value: 1}
    assert len(samples.labels) == 11 and set(samples.labels.tolist()) <= {0, 2}
    assert Reason.LABEL_UNKNOWN_CLASS.advice.startswith("the row names a class")


def test_medmnist_npz_labels_for_each_kind(tmp_path: Path) -> None:
    images = np.zeros((3, 8, 8), np.uint8)
    matrix = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 1]])
    np.savez(tmp_path / "multi.npz", train_images=images, train_labels=matrix)
    _, bits = load_npz_split(tmp_path / "multi.npz", "train", LabelScheme(MULTILABEL, FINDINGS))
    assert bits.tolist() == [0b101, 0, 0b110]
    assert finding_matrix(torch.from_numpy(bits), 3).tolist() == matrix.tolist()
    np.savez(tmp_path / "classes.npz", train_images=images, train_labels=np.array([[0], [2], [1]]))
    _, index = load_npz_split(tmp_path / "classes.npz", "train", LabelScheme(MULTICLASS, CLASSES))
    assert index.tolist() == [0, 2, 1]
    with pytest.raises(DataError, match="0 or 1"):  # binary keeps refusing class indices
        load_npz_split(tmp_path / "classes.npz", "train")
    with pytest.raises(DataError, match="N×4"):
        load_npz_split(tmp_path / "multi.npz", "train", LabelScheme(MULTILABEL, (*FINDINGS, "x")))


@pytest.mark.parametrize("kind", [MULTICLASS, MULTILABEL])
@pytest.mark.parametrize(  # the MONAI networks' steps (≈ 10 s each on 2 cores) with -m slow
    "model",
    [
        "small-cnn",
        pytest.param("densenet121", marks=pytest.mark.slow),
        pytest.param("resnet18", marks=pytest.mark.slow),
        "hog-svm",  # one-vs-rest: a linear SVM per class on the same features
        "lbp-logreg",
    ],
)
def test_each_model_takes_a_dp_step_with_a_head_per_class(model: str, kind: str) -> None:
    from fedscan.common.data.imageset import ImageSet

    net = build_model(model, seed=0, outputs=3)  # Opacus' validator runs inside
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    labels = (
        torch.tensor([0, 2, 1, 2, 0, 1]) if kind == MULTICLASS else torch.tensor([0, 5, 1, 7, 2, 4])
    )
    data = ImageSet(torch.rand(6, 1, 64, 64), labels)
    settings = TrainSettings(
        model=model,
        task=kind,
        classes=CLASSES if kind == MULTICLASS else FINDINGS,
        batch_size=3,
        local_epochs=1,
        augment=False,
    )
    before = [p.detach().clone() for p in net.parameters()]
    outcome = train_local(net, data, settings, dp=DpStep(1.0, 1.0), device=torch.device("cpu"))
    assert outcome.steps >= 1 and np.isfinite(outcome.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert build_model(model, seed=0)(torch.rand(2, 1, 64, 64)).shape == (2,)  # binary: as before
