"""Writing the synthetic CT hospitals' files: single-frame series, enhanced multi-frame objects,
damaged series, and 3-D masks (.npy, NIfTI).

Geometry: axial slices (ImageOrientationPatient 1,0,0,0,1,0) centred on the patient origin; slice
k of a volume (ascending z, as :class:`SeriesGeometry` renders it) lies at z0 + k · spacing. The
files carry realistic but invented patient identifiers (for the privacy tests to look for).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from fedscan.common.data.synth_scanner import fake_patient

if TYPE_CHECKING:
    from fedscan.common.data.synth_ct import CTProfile

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
INTERCEPT = -1024.0


@dataclass(frozen=True)
class SeriesGeometry:
    side: int
    slices: int
    pixel_mm: float
    slice_mm: float

    @property
    def origin(self) -> tuple[float, float, float]:
        half = (self.side - 1) / 2 * self.pixel_mm
        return -half, -half, -(self.slices - 1) / 2 * self.slice_mm

    def position(self, k: int) -> list[float]:
        x0, y0, z0 = self.origin
        return [round(x0, 4), round(y0, 4), round(z0 + k * self.slice_mm, 4)]

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient coordinates (mm) of every voxel: z, y, x arrays of slices × rows × columns."""
        x0, y0, z0 = self.origin
        along = np.arange(self.side) * self.pixel_mm
        z = z0 + np.arange(self.slices) * self.slice_mm
        return np.meshgrid(z, y0 + along, x0 + along, indexing="ij")

    def affine_ras(self) -> np.ndarray:
        x0, y0, z0 = self.origin
        return np.array(
            [
                [-self.pixel_mm, 0, 0, -x0],
                [0, -self.pixel_mm, 0, -y0],
                [0, 0, self.slice_mm, z0],
                [0, 0, 0, 1],
            ]
        )


@dataclass(frozen=True)
class SeriesUIDs:
    series: str
    patient: str


def stored_values(hu: np.ndarray) -> np.ndarray:
    """HU → stored (12-bit unsigned, intercept −1024, slope 1)."""
    return np.clip(np.round(hu - INTERCEPT), 0, 4095).astype(np.uint16)


def write_series(
    folder: Path,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    profile: CTProfile,
    rng: np.random.Generator,
    *,
    uid_seed: str,
    site: int,
    case: int,
    broken: str = "",
) -> SeriesUIDs:
    """One study's series under ``folder`` in the profile's layout (see synth_ct)."""
    folder.mkdir(parents=True, exist_ok=True)
    patient = fake_patient(rng, site, case)
    date = datetime.date(2024, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
    base = _base(patient, profile, uid_seed, date.strftime("%Y%m%d"), geometry)
    stored = stored_values(hu)
    if profile.layout == "enhanced":
        _write_enhanced(folder / "enhanced.dcm", base, stored, geometry, uid_seed)
    else:
        _write_slices(folder, base, stored, geometry, profile, rng, uid_seed, broken)
    return SeriesUIDs(str(base.SeriesInstanceUID), patient["PatientID"])


def _base(
    patient: dict[str, str], profile: CTProfile, seed: str, date: str, geometry: SeriesGeometry
) -> Dataset:
    ds = Dataset()
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.StudyDate = ds.SeriesDate = date
    ds.Modality, ds.BodyPartExamined = "CT", "CHEST"
    ds.Manufacturer = profile.manufacturer
    ds.InstitutionName = f"{profile.manufacturer.split()[0]} General Hospital"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = geometry.side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[seed, "frame"])
    return ds


def _file(ds: Dataset, sop_class: str, sop: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    return ds


def _slice(
    base: Dataset, pixels: np.ndarray, geometry: SeriesGeometry, k: int, sop: str
) -> Dataset:
    ds = _file(base.copy(), CT_IMAGE_STORAGE, sop)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = geometry.position(k)
    ds.ImageOrientationPatient = list(AXIAL)
    ds.PixelSpacing = [geometry.pixel_mm, geometry.pixel_mm]
    ds.SliceThickness = geometry.slice_mm
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1.0, "HU"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _write_slices(
    folder: Path,
    base: Dataset,
    stored: np.ndarray,
    geometry: SeriesGeometry,
    profile: CTProfile,
    rng: np.random.Generator,
    seed: str,
    broken: str,
) -> None:
    order = list(range(geometry.slices))  # ascending z
    if profile.layout == "descending":
        order.reverse()  # head first: instance 1 is the top slice
    names = [f"IM{n + 1:04d}.dcm" for n in range(len(order))]
    if profile.layout == "shuffled-reversed":
        names = [f"{int(rng.integers(1 << 40)):010x}.dcm" for _ in order]
    for number, (k, name) in enumerate(zip(order, names, strict=True)):
        if broken == "missing-slice" and k == geometry.slices // 2:
            continue
        ds = _slice(base, stored[k], geometry, k, generate_uid(entropy_srcs=[seed, str(k)]))
        ds.InstanceNumber = number + 1
        ds.save_as(folder / name, enforce_file_format=True)
    if broken == "duplicate-position":
        k = geometry.slices // 3
        copy = _slice(base, stored[k], geometry, k, generate_uid(entropy_srcs=[seed, "copy"]))
        copy.save_as(folder / "IM9998.dcm", enforce_file_format=True)
    if broken == "localizer":
        scout_uid = generate_uid(entropy_srcs=[seed, "scout"])
        scout = _slice(base, stored[0], geometry, 0, scout_uid)
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        scout.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        scout.save_as(folder / "IM9999.dcm", enforce_file_format=True)


def _write_enhanced(
    path: Path, base: Dataset, stored: np.ndarray, geometry: SeriesGeometry, seed: str
) -> None:
    """One Enhanced CT object; frames written top slice first (descending z)."""
    ds = _file(base.copy(), ENHANCED_CT_IMAGE_STORAGE, generate_uid(entropy_srcs=[seed, "mf"]))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    order = list(reversed(range(geometry.slices)))
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    measures, plane, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [geometry.pixel_mm, geometry.pixel_mm]
    measures.SliceThickness = geometry.slice_mm
    plane.ImageOrientationPatient = list(AXIAL)
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = INTERCEPT, 1.0, "HU"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = geometry.position(k)
        group.PlanePositionSequence = Sequence([position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.ascontiguousarray(stored[order]).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_masks(path: Path, mask: np.ndarray, geometry: SeriesGeometry) -> None:
    """A nodule mask: ``.npy`` (slices ascending along the normal × rows × columns) or NIfTI
    (columns × rows × slices, the series' affine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".npy"):
        np.save(path, mask.astype(np.uint8))
        return
    import nibabel

    image = nibabel.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), geometry.affine_ras())
    image.set_qform(geometry.affine_ras(), code=1)
    image.set_sform(geometry.affine_ras(), code=1)
    nibabel.save(image, str(path))
