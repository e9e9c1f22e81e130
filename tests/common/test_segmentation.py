"""Segmentation at the site: overlap metrics, masks in every format, ingestion with masks, joint
augmentation."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedscan.common.data.augment import TrainingSet
from fedscan.common.data.imageset import ImageSet
from fedscan.common.data.site import load_site
from fedscan.common.errors import DataError, Rejected
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.masks import load_mask, read_mask
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.scan import IngestSettings, ingest_site
from fedscan.common.metrics.segmentation import OverlapCounts, hausdorff95, pooled_overlap
from tests.dicom_factory import image_dataset, segmentation_dataset, write


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum())


def test_pooled_dice_from_summed_counts_equals_dice_on_the_pooled_masks() -> None:
    rng = np.random.default_rng(0)
    sites = []
    for images, density, miss in (
        (5, 0.02, 0.1),
        (12, 0.08, 0.4),
        (3, 0.3, 0.05),
    ):  # sites unlike each other
        truth = rng.random((images, 1, 32, 32)) < density
        predicted = truth ^ (rng.random(truth.shape) < miss * density)
        sites.append((predicted, truth))
    counts = sum((OverlapCounts.of(p, t) for p, t in sites), OverlapCounts())
    pooled_predicted = np.concatenate([p for p, _ in sites])
    pooled_truth = np.concatenate([t for _, t in sites])
    assert counts.dice == pytest.approx(_dice(pooled_predicted, pooled_truth), rel=1e-12)
    union = np.logical_or(pooled_predicted, pooled_truth).sum()
    assert counts.iou == pytest.approx(
        np.logical_and(pooled_predicted, pooled_truth).sum() / union, rel=1e-12
    )
    per_site_mean = np.mean([_dice(p, t) for p, t in sites])
    assert abs(per_site_mean - counts.dice) > 0.01  # averaging site scores would be another number
    assert pooled_overlap(counts, 20)["dice"] == counts.dice


def test_overlap_counts_that_cannot_be_real_are_refused_and_empty_masks_give_nan() -> None:
    assert (
        OverlapCounts.from_metrics({"seg-intersection": 3, "seg-predicted": 5, "seg-truth": 4}).dice
        == 6 / 9
    )
    for bad in (
        {"seg-intersection": 6, "seg-predicted": 5, "seg-truth": 9},
        {"seg-intersection": 0, "seg-predicted": -1, "seg-truth": 2},
        {"seg-intersection": 0, "seg-predicted": float("nan"), "seg-truth": 2},
    ):
        with pytest.raises(ValueError):
            OverlapCounts.from_metrics(bad)
    empty = OverlapCounts.of(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 4)))
    assert math.isnan(empty.dice) and math.isnan(empty.iou)
    assert OverlapCounts.of(np.ones((1, 1, 4, 4)), np.zeros((1, 1, 4, 4))).dice == 0.0


def test_hausdorff95_of_a_square_moved_three_pixels() -> None:
    truth = np.zeros((2, 1, 32, 32), dtype=bool)
    truth[:, :, 8:16, 8:16] = True
    predicted = np.roll(truth, 3, axis=3)
    predicted[1] = False  # no prediction: that image has no distance and is left out
    assert hausdorff95(predicted, truth) == pytest.approx(3.0)
    assert math.isnan(hausdorff95(np.zeros_like(truth), truth))


def _square(rows: int = 20, columns: int = 24) -> np.ndarray:
    mask = np.zeros((rows, columns), dtype=bool)
    mask[5:12, 6:15] = True
    return mask


def test_a_mask_reads_the_same_from_png_numpy_dicom_image_and_dicom_seg(tmp_path: Path) -> None:
    mask = _square()
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "ones.png")  # 0/1 label maps count too
    np.save(tmp_path / "m.npy", mask.astype(np.float32))
    write(image_dataset(mask.astype(np.uint8) * 3), tmp_path / "label-map.dcm")
    write(
        segmentation_dataset(mask, segments=2), tmp_path / "seg.dcm"
    )  # two segments, merged into one finding
    for name in ("m.png", "ones.png", "m.npy", "label-map.dcm", "seg.dcm"):
        assert np.array_equal(read_mask(tmp_path / name, rows=20, columns=24)[0], mask), name


def test_a_bad_mask_is_rejected_with_a_code_and_no_path(tmp_path: Path) -> None:
    Image.fromarray(_square(20, 25).astype(np.uint8) * 255).save(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    (tmp_path / "m.nii.gz").write_bytes(b"\x1f\x8b")
    np.save(tmp_path / "frames.npy", np.zeros((2, 20, 24), dtype=np.uint8))
    write(
        image_dataset(np.ones((20, 24, 3), dtype=np.uint8), photometric="RGB"),
        tmp_path / "colour.dcm",
    )
    cases = {
        "colour.dcm": Reason.MASK_UNREADABLE,
        "wide.png": Reason.MASK_MISMATCH,
        "junk.png": Reason.MASK_UNREADABLE,
        "m.nii.gz": Reason.MASK_UNREADABLE,
        "absent.png": Reason.MASK_UNREADABLE,
        "frames.npy": Reason.MASK_MISMATCH,
    }
    for name, reason in cases.items():
        with pytest.raises(Rejected) as caught:
            load_mask(tmp_path / name, rows=20, columns=24, frames=1, size=16)
        assert caught.value.reason is reason, name
        assert str(tmp_path) not in str(caught.value) and name not in str(caught.value)


def test_a_synthetic_site_ingests_with_masks_that_match_its_labels(
    synthetic_sites: list[Path],
) -> None:
    samples, report = ingest_site(
        synthetic_sites[0], LabelSpec(), IngestSettings(size=64), masks=True
    )
    assert report.accepted == 40 and report.rejected == 0  # mask files are not scanned as images
    assert samples.masks.shape == (40, 1, 64, 64) and set(np.unique(samples.masks)) == {0.0, 1.0}
    with open(synthetic_sites[0] / "labels.csv", newline="") as handle:
        labels = {row["file"]: int(row["label"]) for row in csv.DictReader(handle)}
    assert samples.labels.tolist() == [
        labels[key] for key in samples.keys
    ]  # positive ⇔ a finding is marked
    _, classification = ingest_site(synthetic_sites[0], LabelSpec(), IngestSettings(size=64))
    assert classification.accepted == 40 and classification.rejected == 0


def test_images_with_a_missing_or_mismatched_mask_are_rejected_and_counted(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil.copytree(synthetic_sites[1], site)
    rows = list(csv.DictReader(open(site / "labels.csv", newline="")))
    (site / rows[0]["mask"]).unlink()
    rows[0]["mask"] = (
        ""  # no mask named (a mask file the CSV does not name would be an unlabelled image)
    )
    with Image.open(site / rows[1]["mask"]) as image:
        image.resize((image.width + 4, image.height)).save(site / rows[1]["mask"])  # another size
    with open(site / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = load_site(site, size=64, masks=True)
    assert data.rejected == {"MASK_MISMATCH": 1, "MASK_MISSING": 1}
    assert len(data.train) + len(data.val) == 38 and data.train.masks.shape[0] == len(data.train)


def test_segmentation_needs_a_mask_column_and_npz_sites_have_none(
    tmp_path: Path, tiny_npz: Path
) -> None:
    (tmp_path / "labels.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match="no 'mask' column"):
        load_site(tmp_path, size=64, masks=True)
    from fedscan.common.data.sources import NpzShardSource

    with pytest.raises(DataError, match="no masks"):
        NpzShardSource("s", str(tiny_npz), 0, 2).load(64, masks=True)


def test_augmentation_moves_the_image_and_its_mask_together() -> None:
    mask = torch.zeros(8, 1, 64, 64)
    for index in range(8):
        mask[index, 0, 10 + 4 * index : 30 + 4 * index, 12:40] = 1.0
    data = ImageSet(
        mask.clone(), torch.ones(8, dtype=torch.int64), masks=mask
    )  # the image is its own mask
    dataset = TrainingSet(data, augment=True, seed=3, segmentation=True)
    moved = 0
    for index in range(len(dataset)):
        image, augmented = dataset[index]
        assert set(torch.unique(augmented).tolist()) <= {
            0.0,
            1.0,
        }  # nearest neighbour keeps it binary
        agreement = ((image >= 0.5).float() == augmented).float().mean()
        assert agreement > 0.99
        moved += not torch.equal(augmented, mask[index])
    assert moved >= 3  # the affine did move most pairs
    assert (
        TrainingSet(data, augment=False, seed=0)[0][1].shape == ()
    )  # a classifier trains on the labels
