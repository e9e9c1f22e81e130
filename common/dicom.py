"""Decode one DICOM image into display-ready intensities in [0, 1].

Pixel semantics, in order: stored values → Modality LUT (RescaleSlope /
Intercept, applied once) → VOI LUT or window when the file has one →
MONOCHROME1 inverted → robust scaling to [0, 1]. The site-data issue extends
this with every transfer syntax and a closed list of rejection codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from fedscan.common.errors import DataError

_SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")


class RejectedFile(DataError):
    """A file that cannot become a training sample; ``code`` says why."""


def read_image(path: Path) -> np.ndarray:
    """Return a float32 2-D image in [0, 1], bright = dense.

    Raises
    ------
    RejectedFile
        With code NOT_DICOM, NO_PIXEL_DATA, UNSUPPORTED_PHOTOMETRIC or
        DECODE_FAILED. The message holds no path or patient data.
    """
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise RejectedFile("Not a readable DICOM file.", code="NOT_DICOM") from exc
    if "PixelData" not in ds:
        raise RejectedFile("The DICOM object has no pixel data.", code="NO_PIXEL_DATA")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        raise RejectedFile(f"Photometric interpretation {photometric!r} is not grayscale.",
                           code="UNSUPPORTED_PHOTOMETRIC")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types; one bad file must not stop ingestion
        raise RejectedFile(f"Pixel data could not be decoded ({type(exc).__name__}).",
                           code="DECODE_FAILED") from exc
    if pixels.ndim != 2:
        raise RejectedFile("Only single-frame 2-D images are supported yet.", code="DECODE_FAILED")
    return to_unit_range(ds, pixels)


def to_unit_range(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """Apply modality and VOI LUTs, undo MONOCHROME1 and scale to [0, 1]."""
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        values = values.max() - values
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)
