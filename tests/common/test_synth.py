"""The synthetic hospital generator: valid DICOM, realistic variety, deterministic."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom

from fedscan.common.data.synth import SynthConfig, generate_sites


def _digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            sha.update(path.name.encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def test_files_are_valid_dicom_with_headers_and_pixels(synthetic_sites: list[Path]) -> None:
    ds = pydicom.dcmread(next(synthetic_sites[0].glob("*.dcm")))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Modality == "CR" and ds.BodyPartExamined == "CHEST"
    assert str(ds.PatientName) and ds.PatientID.startswith("S00P")
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_sites_differ_like_real_scanners(synthetic_sites: list[Path]) -> None:
    headers = [pydicom.dcmread(next(site.glob("*.dcm"))) for site in synthetic_sites]
    assert sorted(h.BitsStored for h in headers) == [8, 12, 16]
    assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
    assert len({(h.Rows, h.Columns) for h in headers}) == 3
    assert len({(float(h.RescaleSlope), float(h.RescaleIntercept)) for h in headers}) == 3
    prevalences = []
    for site in synthetic_sites:
        with open(site / "labels.csv", newline="") as handle:
            labels = [int(row["label"]) for row in csv.DictReader(handle)]
        assert len(labels) == 40 and 0 < sum(labels) < 40
        prevalences.append(np.mean(labels))
    assert len(set(prevalences)) == 3


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SynthConfig(sites=2, images_per_site=12, seed=5)
    generate_sites(tmp_path / "a", config)
    generate_sites(tmp_path / "b", config)
    generate_sites(tmp_path / "c", SynthConfig(sites=2, images_per_site=12, seed=6))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_positives_carry_extra_lung_density(synthetic_sites: list[Path]) -> None:
    site = synthetic_sites[0]  # 8-bit MONOCHROME2: stored value grows with density
    with open(site / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    means = {0: [], 1: []}
    for row in rows:
        pixels = pydicom.dcmread(site / row["file"]).pixel_array.astype(float)
        lungs = pixels[
            pixels.shape[0] // 3 : 2 * pixels.shape[0] // 3,
            pixels.shape[1] // 5 : 2 * pixels.shape[1] // 5,
        ]
        means[int(row["label"])].append(lungs.mean())
    assert np.mean(means[1]) > np.mean(means[0])
