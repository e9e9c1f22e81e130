"""One DICOM file's header as slice facts: what series assembly needs, read before any pixel.

A single-frame CT/MR image gives one :class:`Slice`; an enhanced multi-frame object gives one per
frame, from its per-frame and shared functional groups (a per-frame value wins over a shared one,
as PS3.3 C.7.6.16 says). A file whose geometry cannot be read raises :class:`Rejected` with
``SERIES_NO_GEOMETRY``; an object whose per-frame groups do not match NumberOfFrames raises
``SERIES_FRAME_COUNT`` (an inflated count must never size an allocation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from fedscan.common.errors import Rejected
from fedscan.common.ingest.dicom import rescale_of
from fedscan.common.ingest.rejections import Reason

IDENTITY_FIELDS = (
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
    "Modality",
    "Manufacturer",
)


@dataclass(frozen=True)
class Slice:
    """One plane of a series: where it lies, how its pixels read, and where it comes from."""

    file: str  # relative path (local only)
    frame: int  # index in its file (0 for a single-frame image)
    position: tuple[float, float, float]  # ImagePositionPatient, mm
    orientation: tuple[float, ...]  # ImageOrientationPatient: row then column direction cosines
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns (mm)
    rows: int
    columns: int
    rescale: tuple[float, float]  # slope, intercept
    photometric: str
    localizer: bool
    instance: str  # SOPInstanceUID (local only; SEG masks reference it)


@dataclass(frozen=True)
class FileSlices:
    """A file's identity facts (local only) and its slices."""

    identity: dict[str, str]
    slices: tuple[Slice, ...]

    @property
    def series(self) -> str:
        return self.identity["SeriesInstanceUID"]


def file_slices(ds: Dataset, relative: str, frames: int) -> FileSlices:
    """The slices of a vetted header (``frames``: its checked NumberOfFrames)."""
    identity = {name: str(ds.get(name, "") or "").strip() for name in IDENTITY_FIELDS}
    if not identity["SeriesInstanceUID"]:
        raise Rejected(Reason.SERIES_NO_GEOMETRY, "The slice has no SeriesInstanceUID.")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != frames:
        raise Rejected(
            Reason.SERIES_FRAME_COUNT,
            f"NumberOfFrames is {frames} but {len(per_frame)} per-frame groups describe frames.",
        )
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    localizer = "LOCALIZER" in _image_type(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    instance = str(ds.get("SOPInstanceUID", "") or "")
    slices = tuple(
        Slice(
            relative,
            index,
            _position(_find(ds, "PlanePositionSequence", "ImagePositionPatient", index, shared)),
            _vector(
                _find(ds, "PlaneOrientationSequence", "ImageOrientationPatient", index, shared), 6
            ),
            _spacing(_find(ds, "PixelMeasuresSequence", "PixelSpacing", index, shared)),
            int(ds.Rows),
            int(ds.Columns),
            rescale_of(ds, index),
            photometric,
            localizer,
            instance,
        )
        for index in range(frames)
    )
    return FileSlices(identity, slices)


def _image_type(ds: Dataset) -> tuple[str, ...]:
    values = ds.get("ImageType") or ds.get("FrameType") or ()
    if isinstance(values, str):
        values = values.split("\\")
    return tuple(str(value).strip().upper() for value in values)


def _find(ds: Dataset, macro: str, name: str, index: int, shared: Any) -> Any:
    """A geometry attribute for frame ``index``: per-frame group, shared group, then top level."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    for group in ([per_frame[index]] if per_frame is not None else []) + [shared]:
        item = group.get(macro) if group is not None else None
        if item and name in item[0]:
            return item[0].get(name)
    return ds.get(name)


def _position(value: Any) -> tuple[float, float, float]:
    x, y, z = _vector(value, 3)
    return x, y, z


def _vector(value: Any, length: int) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != length or not all(math.isfinite(v) for v in numbers):
        what = "ImagePositionPatient" if length == 3 else "ImageOrientationPatient"
        raise Rejected(
            Reason.SERIES_NO_GEOMETRY, f"{what} is missing or not {length} finite numbers."
        )
    return numbers


def _spacing(value: Any) -> tuple[float, float]:
    try:
        rows, columns = (float(v) for v in value)
    except (TypeError, ValueError):
        rows = columns = float("nan")
    if not (0 < rows < 1e3 and 0 < columns < 1e3):
        raise Rejected(
            Reason.SERIES_NO_GEOMETRY, "PixelSpacing is missing or not two positive numbers (mm)."
        )
    return rows, columns
