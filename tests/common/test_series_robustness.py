"""The mutation battery over series: damaged slices, inflated frame counts and wrong geometry tags
never crash assembly, every rejection carries a code, and no header sizes an allocation beyond
the limits; damaged mask files cost their series only."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.series.assemble import ingest_volumes
from tests.series_factory import (
    edit,
    hu_volume,
    nodule_mask,
    settings,
    slice_files,
    write,
    write_labels,
    write_mask,
    write_seg,
)

CODES = {reason.value for reason in Reason}


def _raw(path: Path, keyword: str, vr: str, value: bytes) -> None:
    """Overwrite a header value's bytes in place, as a broken exporter would (no validation):
    the element keeps its length, the new text padded with spaces."""
    import struct

    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    marker = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker)
    (length,) = struct.unpack("<H", data[at : at + 2])
    data[at + 2 : at + 2 + length] = value[:length].ljust(length, b" ")
    path.write_bytes(bytes(data))


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _enhanced(folder: Path) -> Path:
    return folder / "enhanced.dcm"


Mutation = Callable[[Path], None]
MUTATIONS: dict[str, tuple[str, Mutation, set[str]]] = {
    "truncated slice": (
        "descending",
        lambda f: _truncate(slice_files(f)[5], 0.6),
        {"TRUNCATED", "SERIES_MISSING_SLICE"},
    ),
    "header cut": (
        "descending",
        lambda f: _truncate(slice_files(f)[0], 0.05),
        {"TRUNCATED", "NOT_DICOM", "SERIES_MISSING_SLICE"},
    ),
    "garbage file": (
        "descending",
        lambda f: (f / "junk.dcm").write_bytes(b"\x00DICM" * 40),
        {"NOT_DICOM"},
    ),
    "position text": (
        "descending",
        lambda f: _raw(slice_files(f)[3], "ImagePositionPatient", "DS", b"abc\\1\\2 "),
        {"SERIES_NO_GEOMETRY", "SERIES_MISSING_SLICE"},
    ),
    "position two values": (
        "descending",
        lambda f: _raw(slice_files(f)[3], "ImagePositionPatient", "DS", b"1\\2 "),
        {"SERIES_NO_GEOMETRY", "SERIES_MISSING_SLICE"},
    ),
    "position nan": (
        "descending",
        lambda f: _raw(slice_files(f)[3], "ImagePositionPatient", "DS", b"nan\\0\\0 "),
        {"SERIES_NO_GEOMETRY", "SERIES_MISSING_SLICE"},
    ),
    "orientation zero": (
        "descending",
        lambda f: [edit(p, ImageOrientationPatient=[0, 0, 0, 0, 0, 0]) for p in slice_files(f)],
        {"SERIES_NO_GEOMETRY"},
    ),
    "spacing negative": (
        "descending",
        lambda f: edit(slice_files(f)[2], PixelSpacing=[-1, 6]),
        {"SERIES_NO_GEOMETRY", "SERIES_MISSING_SLICE"},
    ),
    "no series uid": (
        "descending",
        lambda f: edit(slice_files(f)[7], SeriesInstanceUID=None),
        {"SERIES_NO_GEOMETRY", "SERIES_MISSING_SLICE"},
    ),
    "rows inflated": (
        "descending",
        lambda f: edit(slice_files(f)[4], Rows=60000),
        {"OUT_OF_RANGE", "SERIES_MISSING_SLICE"},
    ),
    "rows of one slice": (
        "descending",
        lambda f: edit(slice_files(f)[4], Rows=12),
        {"SERIES_INCONSISTENT"},
    ),
    "pixels short": (
        "descending",
        lambda f: edit(slice_files(f)[6], PixelData=b"\x00" * 100),
        {"PIXEL_LENGTH_MISMATCH"},
    ),
    "frames inflated": (
        "enhanced",
        lambda f: edit(_enhanced(f), NumberOfFrames=4000),
        {"SERIES_FRAME_COUNT", "PIXEL_LENGTH_MISMATCH"},
    ),
    "frames beyond the limit": (
        "enhanced",
        lambda f: edit(_enhanced(f), NumberOfFrames=10**7),
        {"OUT_OF_RANGE"},
    ),
    "a per-frame group lost": (
        "enhanced",
        lambda f: _drop_frame_group(_enhanced(f)),
        {"SERIES_FRAME_COUNT"},
    ),
    "enhanced truncated": (
        "enhanced",
        lambda f: _truncate(_enhanced(f), 0.7),
        {"TRUNCATED"},
    ),
}


def _drop_frame_group(path: Path) -> None:
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[3]
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("originals")
    sites = {}
    for layout in ("descending", "enhanced"):
        write(root / layout, hu_volume(), layout=layout)
        write_labels(root / layout, [{"file": "CT0000", "label": 1}])
        sites[layout] = root / layout
    return sites


def _codes(site: Path) -> set[str]:
    # Real decode workers (memory-limited processes), as at a site.
    samples, report = ingest_volumes(site, LabelSpec(), settings(workers=1))
    codes = {r.reason for r in report.series if r.reason} | {
        f.reason for f in report.file_rejections
    }
    assert all(r.status == "accepted" or r.reason in CODES for r in report.series)
    assert codes <= CODES
    assert len(samples.labels) == report.accepted
    return codes


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_is_rejected_with_its_code_and_nothing_crashes(
    name: str, originals: dict[str, Path], tmp_path: Path
) -> None:
    layout, mutate, expected = MUTATIONS[name]
    site = tmp_path / "site"
    shutil.copytree(originals[layout], site)
    mutate(site / "CT0000")
    codes = _codes(site)
    assert codes and codes <= expected, codes


def test_random_byte_damage_never_crashes_assembly(
    originals: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(20)
    outcomes = set()
    for trial in range(12):
        layout = ("descending", "enhanced")[trial % 2]
        site = tmp_path / f"trial-{trial}"
        shutil.copytree(originals[layout], site)
        files = slice_files(site / "CT0000")
        for path in rng.choice(files, size=min(3, len(files)), replace=False):
            data = bytearray(path.read_bytes())
            for offset in rng.integers(132, min(len(data), 1200), size=8):
                data[int(offset)] = int(rng.integers(256))
            path.write_bytes(bytes(data))
        outcomes |= _codes(site) or {"accepted"}
    assert outcomes  # every trial ended accepted or with codes only (checked in _codes)


@pytest.mark.parametrize("kind", ["npy", "nii", "nii.gz", "dcm"])
def test_a_truncated_mask_file_rejects_its_series_with_a_code_and_nothing_crashes(
    kind: str, tmp_path: Path
) -> None:
    # Found by hand (2026-12-06): a .nii.gz cut short passed the header check, then its voxel read
    # raised EOFError, which ended `fedscan data check` with a bare "Aborted.".
    folder = write(tmp_path, hu_volume())
    mask = nodule_mask()
    path = tmp_path / "masks" / f"m.{kind}"
    path.parent.mkdir()
    if kind == "dcm":
        write_seg(path, folder, mask)
    else:
        write_mask(path, mask)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 16])  # the last voxels (and a gzip's trailer) lost
    write_labels(tmp_path, [{"file": "CT0000", "mask": f"masks/m.{kind}"}])
    samples, report = ingest_volumes(tmp_path, LabelSpec(), settings(), masks=True)
    (series,) = report.series
    assert series.reason == Reason.MASK_UNREADABLE, (series.status, series.message)
    assert str(tmp_path) not in series.message and len(samples.labels) == 0
