"""Synthetic findings (issue 19): multi-class, multi-label and K-label segmentation sites.

Invariants checked: the default task's bytes never change; same seed, same files; prevalences
differ by site yet every class and finding appears at every site (60 images); the CSV columns;
label maps hold 0..K and match the drawn structures; and each finding is learnable, shown by a
simple image statistic (no network training here).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import typer
from PIL import Image
from scipy.ndimage import binary_dilation, uniform_filter
from typer.testing import CliRunner

from fedscan.cli.main import synth
from fedscan.common.data.synth import (
    FINDINGS,
    MULTICLASS_CLASSES,
    STRUCTURES,
    TASKS,
    SynthConfig,
    generate_sites,
)
from fedscan.common.data.synth_phantom import (
    FINDING_DENSITY,
    HEART_DENSITY,
    draw_layout,
    label_map,
    render_layout,
)
from fedscan.common.errors import ConfigError
from fedscan.common.ingest.labels import LabelSpec, read_label_table

# The files SynthConfig(sites=5, images_per_site=12, seed=3) wrote before issue 19 (relative
# paths and bytes, sorted). A change here means the default sites changed: every benchmark and
# recorded result built on them would no longer reproduce. (Bumping pydicom or Pillow may
# legitimately change it; then record the new value with the old generator's output checked.)
BINARY_DIGEST = "1196a237c44c5af6887c9ba101d2b7fb1ec971a4f20b2ac475014ed72755819f"
SIDE = 64  # the statistics look at images as a small CNN would: 64×64, scaled per image


def _digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            sha.update(str(path.relative_to(folder)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def _rows(site: Path) -> list[dict[str, str]]:
    with open(site / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _header(site: Path) -> list[str]:
    return list(_rows(site)[0])


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Per task, 60 images at each of four sites (three reference mixes, one drawn from the seed);
    segmentation: three sites, all four structures."""
    configs = {
        "multilabel": SynthConfig(4, 60, 7, "multilabel"),
        "multiclass": SynthConfig(4, 60, 7, "multiclass"),
        "segmentation": SynthConfig(3, 60, 7, "segmentation", labels=len(STRUCTURES)),
    }
    root = tmp_path_factory.mktemp("findings")
    return {task: generate_sites(root / task, config) for task, config in configs.items()}


def test_default_task_writes_the_original_binary_sites_byte_for_byte(tmp_path: Path) -> None:
    shape = {"sites": 5, "images_per_site": 12, "seed": 3}
    generate_sites(tmp_path / "default", SynthConfig(**shape))
    generate_sites(tmp_path / "explicit", SynthConfig(**shape, task="classification"))
    generate_sites(tmp_path / "one-label", SynthConfig(**shape, task="segmentation", labels=1))
    assert _digest(tmp_path / "default") == BINARY_DIGEST
    assert _digest(tmp_path / "explicit") == BINARY_DIGEST
    assert _digest(tmp_path / "one-label") == BINARY_DIGEST


@pytest.mark.parametrize(
    ("task", "labels"), [("multiclass", 1), ("multilabel", 1), ("segmentation", 4)]
)
def test_same_seed_writes_identical_files(tmp_path: Path, task: str, labels: int) -> None:
    config = SynthConfig(sites=2, images_per_site=12, seed=5, task=task, labels=labels)
    generate_sites(tmp_path / "a", config)
    generate_sites(tmp_path / "b", config)
    generate_sites(tmp_path / "c", dataclasses.replace(config, seed=6))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_config_names_the_choices_when_a_value_is_wrong() -> None:
    with pytest.raises(ConfigError, match="classification, multiclass, multilabel, segmentation"):
        SynthConfig(task="multi-label")
    with pytest.raises(ConfigError, match="only for --task segmentation"):
        SynthConfig(task="multilabel", labels=2)
    with pytest.raises(ConfigError, match="1 to 4 .*1 opacity, 2 heart, 3 nodule, 4 effusion"):
        SynthConfig(task="segmentation", labels=len(STRUCTURES) + 1)
    with pytest.raises(ConfigError, match="1 to 4"):
        SynthConfig(task="segmentation", labels=0)
    assert TASKS[0] == SynthConfig().task == "classification"


def test_multilabel_csv_has_a_column_per_finding_and_the_names(
    sites: dict[str, list[Path]],
) -> None:
    assert FINDINGS == ("opacity", "nodule", "effusion", "cardiomegaly")
    flags = ["opacity", "nodule", "effusion", "cardiomegaly"]
    for site in sites["multilabel"]:
        assert _header(site) == ["file", "sop_instance_uid", "label", *flags, "findings", "mask"]
        for row in _rows(site):
            assert {row[name] for name in flags} <= {"0", "1"}
            present = [name for name in flags if row[name] == "1"]
            assert row["findings"] == "|".join(present)
            assert row["label"] == str(int(bool(present)))


def test_multiclass_csv_holds_one_class_name_per_image(sites: dict[str, list[Path]]) -> None:
    assert MULTICLASS_CLASSES == ("normal", "opacity", "nodule", "effusion")
    for site in sites["multiclass"]:
        assert _header(site) == ["file", "sop_instance_uid", "label", "finding", "mask"]
        for row in _rows(site):
            assert row["finding"] in MULTICLASS_CLASSES
            assert row["label"] == str(int(row["finding"] != "normal"))


def test_the_binary_label_column_still_reads(sites: dict[str, list[Path]]) -> None:
    table = read_label_table(LabelSpec(), sites["multilabel"][0])
    assert len(table.labels) == 60 and not table.invalid
    assert 0 < sum(table.labels.values()) < 60


def test_every_class_and_finding_is_at_every_site(sites: dict[str, list[Path]]) -> None:
    for site in sites["multilabel"]:
        rows = _rows(site)
        assert all(sum(row[name] == "1" for row in rows) >= 3 for name in FINDINGS)
        assert sum(row["findings"] == "" for row in rows) >= 3
    for site in sites["multiclass"]:
        classes = [row["finding"] for row in _rows(site)]
        assert all(classes.count(name) >= 3 for name in MULTICLASS_CLASSES)


def test_prevalences_differ_by_site(sites: dict[str, list[Path]]) -> None:
    mixes = [
        tuple(sum(row[name] == "1" for row in _rows(site)) for name in FINDINGS)
        for site in sites["multilabel"]
    ]
    assert len(set(mixes)) == len(mixes)
    effusions = [mix[FINDINGS.index("effusion")] for mix in mixes]
    assert effusions[1] < min(effusions[0], effusions[2])  # the site with few effusions
    classes = [
        tuple([row["finding"] for row in _rows(site)].count(name) for name in MULTICLASS_CLASSES)
        for site in sites["multiclass"]
    ]
    assert len(set(classes)) == len(classes)


@pytest.mark.parametrize("labels", [2, 3])
def test_label_maps_hold_exactly_the_values_0_to_k(tmp_path: Path, labels: int) -> None:
    config = SynthConfig(sites=1, images_per_site=20, seed=2, task="segmentation", labels=labels)
    (site,) = generate_sites(tmp_path, config)
    assert _label_values(site) == set(range(labels + 1))


def test_four_label_maps_cover_every_structure_at_every_site(sites: dict[str, list[Path]]) -> None:
    for site in sites["segmentation"]:
        assert _header(site) == ["file", "sop_instance_uid", "label", "mask"]  # as binary sites
        assert _label_values(site) == set(range(len(STRUCTURES) + 1))


def _label_values(site: Path) -> set[int]:
    values: set[int] = set()
    for row in _rows(site):
        with Image.open(site / row["mask"]) as image:
            assert image.mode == "L"  # 8-bit integers, not a 0/255 rendering
            values |= set(np.unique(np.asarray(image)).tolist())
    return values


def test_label_maps_mark_what_the_images_show(sites: dict[str, list[Path]]) -> None:
    """Heart, nodule and effusion pixels are brighter than the unlabelled ring around them."""
    for site in sites["segmentation"]:
        for row in _rows(site):
            pixels = _display(site / row["file"])
            with Image.open(site / row["mask"]) as image:
                labels = np.asarray(image)
            for value in (STRUCTURES.index(name) + 1 for name in ("heart", "nodule", "effusion")):
                inside = labels == value
                ring = binary_dilation(inside, iterations=3) & ~inside & (labels == 0)
                if inside.sum() >= 5 and ring.sum() >= 5:
                    assert pixels[inside].mean() > pixels[ring].mean(), (row["file"], value)


def test_masks_are_exactly_the_drawn_structures() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        layout = draw_layout(rng, set(FINDINGS))
        density, masks = render_layout(layout, 150, 130)
        without_nodule, _ = render_layout(dataclasses.replace(layout, nodule=None), 150, 130)
        without_fluid, _ = render_layout(dataclasses.replace(layout, effusions=()), 150, 130)
        without_opacity, _ = render_layout(dataclasses.replace(layout, opacities=()), 150, 130)
        np.testing.assert_array_equal(density != without_nodule, masks["nodule"])
        np.testing.assert_array_equal(density != without_fluid, masks["effusion"])
        added = density - without_opacity
        visible = (added >= FINDING_DENSITY - 1e-6) | (density == 1.0)  # or saturated
        assert visible[masks["opacity"]].all()
        assert (added[~masks["opacity"]] < FINDING_DENSITY).all()
        without_heart, _ = render_layout(dataclasses.replace(layout, heart=None), 150, 130)
        assert not (density != without_heart)[~masks["heart"]].any()
        assert (without_fluid[masks["heart"]] >= HEART_DENSITY).all()


def test_label_map_paints_findings_over_the_heart() -> None:
    rng = np.random.default_rng(12)
    _, masks = render_layout(draw_layout(rng, set(FINDINGS)), 140, 140)
    labels = label_map(masks, STRUCTURES, (140, 140))
    assert set(np.unique(labels).tolist()) == set(range(len(STRUCTURES) + 1))
    findings = [name for name in STRUCTURES if name != "heart"]
    for index, name in enumerate(STRUCTURES):
        later = findings[findings.index(name) + 1 :] if name in findings else findings
        covered = np.zeros_like(masks[name])
        for other in later:
            covered |= masks[other]
        np.testing.assert_array_equal(labels == index + 1, masks[name] & ~covered)


def _display(path: Path) -> np.ndarray:
    """Displayed brightness (MONOCHROME1 inverted), full size."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.float32)
    return pixels.max() - pixels if dataset.PhotometricInterpretation == "MONOCHROME1" else pixels


def _small(path: Path) -> np.ndarray:
    """The image as a CNN sees it: SIDE × SIDE, area-averaged, scaled to its 1st–99th centile."""
    resized = np.asarray(Image.fromarray(_display(path)).resize((SIDE, SIDE), Image.BOX))
    low, high = np.percentile(resized, [1, 99])
    return (resized - low) / (high - low)


def _box(image: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
    return image[int(y0 * SIDE) : int(y1 * SIDE), int(x0 * SIDE) : int(x1 * SIDE)]


def _top_hat(image: np.ndarray) -> np.ndarray:
    """A 3×3 mean minus the 7×7 mean around it: high on small bright spots, low on broad ones."""
    return uniform_filter(image, 3) - uniform_filter(image, 7)


def _statistics(image: np.ndarray) -> dict[str, float]:
    """One number per finding, from where the phantom draws it (the heart sits image-right)."""
    spots = _top_hat(image)
    upper = [_box(image, 0.26, 0.56, 0.20, 0.42), _box(image, 0.26, 0.46, 0.58, 0.80)]
    bases = [_box(image, 0.66, 0.76, 0.20, 0.36), _box(image, 0.66, 0.76, 0.72, 0.80)]
    inner = [_box(spots, 0.25, 0.47, 0.22, 0.40), _box(spots, 0.25, 0.47, 0.60, 0.78)]
    return {
        # Upper lung fields, above the heart and any fluid: patches raise their brightest tenth.
        "opacity": float(np.percentile(np.concatenate([part.ravel() for part in upper]), 90)),
        "nodule": float(max(part.max() for part in inner)),  # the brightest small spot
        "effusion": float(max(part.mean() for part in bases)),  # the lateral lung bases
        "cardiomegaly": float(_box(image, 0.55, 0.68, 0.67, 0.74).mean()),  # beside a normal heart
    }


def _auc(positives: list[float], negatives: list[float]) -> float:
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


def _aucs(site: Path, truth: dict[str, str]) -> dict[str, float]:
    """Per statistic, the AUC of telling images with ``row[column] == value`` from the rest."""
    rows = _rows(site)
    statistics = [_statistics(_small(site / row["file"])) for row in rows]
    aucs = {}
    for name, (column, value) in ((name, truth[name].split("=")) for name in truth):
        hits = [row[column] == value for row in rows]
        scores = [stats[name] for stats in statistics]
        aucs[name] = _auc(
            [score for score, hit in zip(scores, hits, strict=True) if hit],
            [score for score, hit in zip(scores, hits, strict=True) if not hit],
        )
    return aucs


def test_each_finding_is_learnable_at_every_site(sites: dict[str, list[Path]]) -> None:
    for site in sites["multilabel"]:
        aucs = _aucs(site, {name: f"{name}=1" for name in FINDINGS})
        assert min(aucs.values()) > 0.8, (site.name, aucs)


def test_multiclass_classes_are_learnable_one_against_the_rest(
    sites: dict[str, list[Path]],
) -> None:
    for site in sites["multiclass"]:
        aucs = _aucs(site, {name: f"finding={name}" for name in MULTICLASS_CLASSES[1:]})
        assert min(aucs.values()) > 0.8, (site.name, aucs)


def _synth_app() -> typer.Typer:
    # The synth command alone: its options and errors, whatever else the console app registers.
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command()(synth)
    return app


def test_cli_writes_the_chosen_task(tmp_path: Path) -> None:
    args = ["synth", "--sites", "1", "--images-per-site", "10", "--out", str(tmp_path)]
    result = CliRunner().invoke(_synth_app(), [*args, "--task", "multilabel"])
    assert result.exit_code == 0, result.output
    assert "findings" in _header(tmp_path / "site-0")
    result = CliRunner().invoke(_synth_app(), [*args, "--task", "segmentation", "--labels", "3"])
    assert result.exit_code == 0, result.output
    assert _label_values(tmp_path / "site-0") == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "multi"], "classification, multiclass, multilabel, segmentation"),
        (["--labels", "1"], "only for --task segmentation"),
        (["--task", "multiclass", "--labels", "2"], "only for --task segmentation"),
        (["--task", "segmentation", "--labels", "9"], "1 to 4"),
    ],
)
def test_cli_names_the_choices_on_a_bad_value(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    args = ["synth", "--images-per-site", "10", "--out", str(tmp_path), *extra]
    result = CliRunner().invoke(_synth_app(), args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_help_says_what_each_task_writes() -> None:
    result = CliRunner().invoke(_synth_app(), ["synth", "--help"])
    text = " ".join(result.output.replace("│", " ").split())  # the help as one line, unboxed
    for phrase in ("multiclass: a finding column", "multilabel: 0/1 columns", "label maps"):
        assert phrase in text
    assert "1 opacity, 2 heart, 3 nodule, 4 effusion" in text
