"""Both loaders (site folder, npz), the patient split, the partitioner and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fedscan.common.data.npz import load_npz_shard, load_npz_split
from fedscan.common.data.partition import partition_indices
from fedscan.common.data.site import load_site, patient_split
from fedscan.common.errors import ConfigError, DataError


def test_site_folder_loads_into_unit_range_tensors(synthetic_sites: list[Path]) -> None:
    site = load_site(synthetic_sites[1], size=32, val_fraction=0.25, seed=0)
    assert len(site.train) + len(site.val) == 40
    assert 8 <= len(site.val) <= 12
    assert tuple(site.train.images.shape[1:]) == (1, 32, 32)
    assert 0.0 <= float(site.train.images.min()) and float(site.train.images.max()) <= 1.0
    assert site.rejected == {}


def test_corrupt_and_truncated_files_are_reported_and_skipped(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil.copytree(synthetic_sites[0], site)
    files = sorted(site.glob("*.dcm"))
    files[0].write_bytes(b"not a dicom file at all")
    files[1].write_bytes(files[1].read_bytes()[:400])
    loaded = load_site(site, size=32)
    assert len(loaded.train) + len(loaded.val) == 38
    assert loaded.rejected == {"NOT_DICOM": 1, "TRUNCATED": 1}


def test_a_folder_with_no_usable_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"junk")
    (tmp_path / "labels.csv").write_text("file,label\na.dcm,1\n")
    with pytest.raises(DataError, match="No usable image at this site: 0 of 1 files accepted"):
        load_site(tmp_path, size=32)


def test_patient_split_keeps_each_patient_on_one_side() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1] * 4)
    groups = [f"p{i // 2}" for i in range(40)]  # two images per patient
    train, val = patient_split(labels, groups, 0.25, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert np.array_equal(val, patient_split(labels, groups, 0.25, seed=3)[1])
    assert set(labels[val]) == {0, 1}


def test_adding_patients_does_not_move_existing_ones() -> None:
    groups = [f"p{i}" for i in range(100)]
    labels = np.zeros(100, dtype=np.int64)
    _, val = patient_split(labels[:60], groups[:60], 0.2, seed=0)
    _, val_grown = patient_split(labels, groups, 0.2, seed=0)
    moved = set(val.tolist()) - set(val_grown.tolist())
    assert len(moved) <= 2  # only the rounding of the cut can move a boundary patient


def test_npz_split_and_shards(tiny_npz: Path) -> None:
    images, labels = load_npz_split(tiny_npz, "train")
    assert images.shape == (120, 28, 28) and images.max() <= 1.0
    shards = [
        load_npz_shard(tiny_npz, site=i, sites=3, partition="iid", seed=0, size=28)
        for i in range(3)
    ]
    assert sum(len(s.train) for s in shards) == 120
    assert sum(len(s.val) for s in shards) == 60


def test_unreadable_or_incomplete_npz_is_a_data_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="Cannot read"):
        load_npz_split(garbage, "train")
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="train_labels"):
        load_npz_split(partial, "train")


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5"])
def test_partition_assigns_every_sample_once_and_is_deterministic(spec: str) -> None:
    labels = np.random.default_rng(1).integers(0, 2, 300)
    first = partition_indices([labels], 3, spec, seed=4)[0]
    again = partition_indices([labels], 3, spec, seed=4)[0]
    assert sorted(np.concatenate(first).tolist()) == list(range(300))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_dirichlet_skews_labels_and_bad_specs_fail() -> None:
    labels = np.repeat([0, 1], 500)
    shards = partition_indices([labels], 3, "dirichlet:0.1", seed=0)[0]
    prevalences = [labels[s].mean() for s in shards]
    assert max(prevalences) - min(prevalences) > 0.3
    for spec in ("dirichlet:0", "dirichlet:x", "shards"):
        with pytest.raises(ConfigError):
            partition_indices([labels], 3, spec, seed=0)
