"""Segmentation masks at the site: read, check against their image, resize with it.

A mask is a file named in the labels CSV's mask column, relative to the site
folder: a PNG (or other Pillow format), a NumPy ``.npy`` array, or DICOM — a
Segmentation object (SEG; every segment of a single-frame image is merged) or
an ordinary image used as a label map. Non-zero (integer) or ≥ 0.5 (float)
pixels are foreground: one binary mask per image, the finding.

The mask's size is checked against its image's header before its pixels are
read: rows × columns must match, and its frames the image's frames. A mask
that is missing, unreadable or of another size rejects its image with a code
(:class:`~fedscan.common.ingest.rejections.Reason`) and a message without paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.rejections import Reason

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_DICOM_MAGIC_OFFSET = 128


def load_mask(path: Path, *, rows: int, columns: int, frames: int, size: int) -> np.ndarray:
    """The mask of an image with ``frames`` frames of ``rows`` × ``columns``, as F×1×S×S float32 in
    {0, 1}.

    Raises :class:`Rejected` (MASK_UNREADABLE or MASK_MISMATCH) with what is wrong.
    """
    mask = read_mask(path, rows=rows, columns=columns)
    if mask.shape[0] == 1 and frames > 1:
        raise Rejected(
            Reason.MASK_MISMATCH,
            f"The mask has 1 frame; its image gave {frames} "
            "(set frames = middle, or give one mask frame per image frame).",
        )
    if mask.shape[0] != frames:
        raise Rejected(
            Reason.MASK_MISMATCH, f"The mask has {mask.shape[0]} frames; its image gave {frames}."
        )
    return resize_mask(mask, size)


def read_mask(path: Path, *, rows: int, columns: int) -> np.ndarray:
    """F×H×W booleans; the declared size is checked against ``rows`` × ``columns`` before
    decoding."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask file cannot be read ({exc.strerror})."
        ) from exc
    if head[_DICOM_MAGIC_OFFSET:] == b"DICM" or path.suffix.lower() == ".dcm":
        return _read_dicom(path, rows, columns)
    if path.suffix.lower() == ".npy":
        return _read_numpy(path, rows, columns)
    if path.suffix.lower() in (".nii", ".gz"):
        raise Rejected(
            Reason.MASK_UNREADABLE, "NIfTI masks are not read; convert the mask to PNG or .npy."
        )
    return _read_raster(path, rows, columns)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """F×H×W booleans → F×1×S×S {0, 1}: area-averaged like the image, then cut at one half."""
    import torch  # ingestion imports torch only when it resizes

    tensor = torch.from_numpy(mask.astype(np.float32))[:, None]
    resized = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")
    return (resized >= 0.5).float().numpy()


def _check_size(found: tuple[int, int], rows: int, columns: int) -> None:
    if found != (rows, columns):
        raise Rejected(
            Reason.MASK_MISMATCH,
            f"The mask is {found[0]}×{found[1]}; its image is {rows}×{columns}.",
        )


def _foreground(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise Rejected(Reason.MASK_UNREADABLE, "The mask holds NaN or infinite values.")
        return values >= 0.5
    return values != 0


def _read_raster(path: Path, rows: int, columns: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            _check_size((image.height, image.width), rows, columns)
            values = np.asarray(
                image.convert("L") if image.mode not in ("1", "L", "I", "I;16", "F") else image
            )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask image cannot be decoded ({type(exc).__name__})."
        ) from exc
    return _foreground(values)[None]


def _read_numpy(path: Path, rows: int, columns: int) -> np.ndarray:
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask is not a NumPy array file ({type(exc).__name__})."
        ) from exc
    if values.ndim not in (2, 3) or not (
        np.issubdtype(values.dtype, np.number) or values.dtype == bool
    ):
        raise Rejected(
            Reason.MASK_UNREADABLE,
            f"A .npy mask must be a numeric H×W or F×H×W array; got "
            f"{values.ndim} dimensions of {values.dtype}.",
        )
    _check_size(tuple(values.shape[-2:]), rows, columns)
    values = np.asarray(values)
    return _foreground(values if values.ndim == 3 else values[None])


def _read_dicom(path: Path, rows: int, columns: int) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # One parse; the pixel data is read (and decoded) only after the size check passes.
        dataset = pydicom.dcmread(path, defer_size="64 KB")
        _check_size((int(dataset.Rows), int(dataset.Columns)), rows, columns)
        values = np.asarray(dataset.pixel_array).reshape(_declared_frames(dataset), rows, columns)
    except Rejected:
        raise
    except (
        InvalidDicomError,
        AttributeError,
        KeyError,
        ValueError,
        TypeError,
        OSError,
        RuntimeError,
    ) as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The DICOM mask cannot be decoded ({type(exc).__name__})."
        ) from exc
    if str(dataset.get("SOPClassUID", "")) == SEGMENTATION_STORAGE:
        return _segments_of_one_image(values, dataset)
    return _foreground(values)


def _declared_frames(dataset: Any) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _segments_of_one_image(values: np.ndarray, dataset: Any) -> np.ndarray:
    """A SEG's frames are (segment, source frame) pairs; for a single-frame source every segment is
    merged into one finding mask. Multi-frame sources need the frame mapping: refused, with the
    fix."""
    references = {
        str(ref.ReferencedSOPInstanceUID)
        for item in dataset.get("ReferencedSeriesSequence", [])
        for ref in item.get("ReferencedInstanceSequence", [])
    }
    if len(references) > 1 or len(values) > max(len(dataset.get("SegmentSequence", [])), 1):
        raise Rejected(
            Reason.MASK_MISMATCH,
            "The SEG covers several source frames or images; export one SEG "
            "per single-frame image, or masks as .npy (F×H×W).",
        )
    return np.asarray(_foreground(values).any(axis=0, keepdims=True))
