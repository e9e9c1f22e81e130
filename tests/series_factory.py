"""Small CT series with exactly known values, in every layout sites export, for the volume tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from fedscan.common.data.synth_ct import CTProfile
from fedscan.common.data.synth_ct_files import SeriesGeometry, write_masks, write_series
from fedscan.common.ingest.decode_pool import PoolSettings
from fedscan.common.ingest.masks import SEGMENTATION_STORAGE
from fedscan.common.ingest.series.assemble import VolumeSettings
from fedscan.common.ingest.series.resample import VolumeInput

GEOMETRY = SeriesGeometry(side=24, slices=12, pixel_mm=6.0, slice_mm=5.0)
TARGET = VolumeInput(8, 16, 10.0)
LAYOUTS = ("descending", "shuffled-reversed", "enhanced")


def hu_volume(seed: int = 0, geometry: SeriesGeometry = GEOMETRY) -> np.ndarray:
    """Whole-number HU, slices ascending along z: stored = HU + 1024 exactly."""
    rng = np.random.default_rng(seed)
    shape = (geometry.slices, geometry.side, geometry.side)
    return rng.integers(-1000, 1500, shape).astype(np.float64)


def write(
    site_dir: Path,
    hu: np.ndarray,
    *,
    layout: str = "descending",
    case: int = 0,
    broken: str = "",
    geometry: SeriesGeometry = GEOMETRY,
) -> Path:
    """One series in ``layout`` under ``site_dir/CTnnnn``; returns that folder."""
    profile = CTProfile(
        "Test CT", geometry.side, geometry.pixel_mm, geometry.slice_mm, 0, 0.5, layout
    )
    folder = site_dir / f"CT{case:04d}"
    write_series(
        folder,
        hu,
        geometry,
        profile,
        np.random.default_rng(case),
        uid_seed=f"test-{case}",
        site=0,
        case=case,
        broken=broken,
    )
    return folder


def write_labels(site_dir: Path, rows: list[dict[str, object]]) -> None:
    columns = sorted({key for row in rows for key in row})
    with open(site_dir / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def nodule_mask() -> np.ndarray:
    """A small box of foreground in the GEOMETRY series, off-centre so a flipped axis would show."""
    mask = np.zeros((GEOMETRY.slices, GEOMETRY.side, GEOMETRY.side), np.uint8)
    mask[3:7, 5:12, 14:20] = 1
    return mask


def write_mask(path: Path, mask: np.ndarray, geometry: SeriesGeometry = GEOMETRY) -> None:
    write_masks(path, mask, geometry)


def settings(cache_dir: str = "", *, workers: int = 0, **changes: object) -> VolumeSettings:
    return VolumeSettings(
        TARGET, pool=PoolSettings(workers=workers), cache_dir=cache_dir, **changes
    )  # type: ignore[arg-type]


def slice_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def edit(path: Path, **attributes: object) -> None:
    """Set (or with None, delete) attributes of one file, keeping everything else."""
    ds = pydicom.dcmread(path)
    for name, value in attributes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)


def write_seg(path: Path, folder: Path, mask: np.ndarray) -> None:
    """A DICOM SEG of ``mask`` (slices ascending z) over the single-frame series in ``folder``:
    one 8-bit frame per slice that marks anything, each naming its source slice's SOP UID."""
    by_z = {}
    for file in slice_files(folder):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        by_z[round(float(ds.ImagePositionPatient[2]), 3)] = str(ds.SOPInstanceUID)
    sources = [by_z[z] for z in sorted(by_z)]  # ascending z, as the mask
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SEGMENTATION_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    seg = Dataset()
    seg.file_meta = meta
    seg.SOPClassUID, seg.SOPInstanceUID = SEGMENTATION_STORAGE, meta.MediaStorageSOPInstanceUID
    seg.Modality = "SEG"
    marked = [k for k in range(len(mask)) if mask[k].any()]
    seg.Rows, seg.Columns = mask.shape[1:]
    seg.NumberOfFrames = len(marked)
    seg.SamplesPerPixel, seg.PhotometricInterpretation = 1, "MONOCHROME2"
    seg.BitsAllocated, seg.BitsStored, seg.HighBit, seg.PixelRepresentation = 8, 8, 7, 0
    groups = []
    for k in reversed(marked):  # frames in another order than the slices: the references count
        source, derivation, segment, group = Dataset(), Dataset(), Dataset(), Dataset()
        source.ReferencedSOPInstanceUID = sources[k]
        derivation.SourceImageSequence = Sequence([source])
        segment.ReferencedSegmentNumber = 1
        group.DerivationImageSequence = Sequence([derivation])
        group.SegmentIdentificationSequence = Sequence([segment])
        groups.append(group)
    seg.PerFrameFunctionalGroupsSequence = Sequence(groups)
    seg.PixelData = np.ascontiguousarray(mask[list(reversed(marked))].astype(np.uint8)).tobytes()
    seg.save_as(path, enforce_file_format=True)
