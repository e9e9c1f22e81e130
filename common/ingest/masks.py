"""Segmentation masks at the site: read, check against their image, resize with it.

A mask is a file named in the labels CSV's mask column, relative to the site
folder: a PNG (or other Pillow format), a NumPy ``.npy`` array, or DICOM — a
Segmentation object (SEG) or an ordinary image used as a label map. For a binary run non-zero
(integer) or ≥ 0.5 (float) pixels are foreground (every segment of a SEG merged): one mask per
image, the finding. For a label map of K structures (``structures`` = K ≥ 2) every pixel must
hold an integer 0..K (a SEG's segment k is label k); a value outside rejects the image, and the
map is resized by a per-label area vote, never by interpolating label values.

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


def load_mask(
    path: Path, *, rows: int, columns: int, frames: int, size: int, structures: int = 0
) -> np.ndarray:
    """The mask of an image with ``frames`` frames of ``rows`` × ``columns``, as F×1×S×S float32 in
    {0, 1}, or in 0..K for a label map of ``structures`` = K.

    Raises :class:`Rejected` (MASK_UNREADABLE or MASK_MISMATCH) with what is wrong.
    """
    mask = read_mask(path, rows=rows, columns=columns, structures=structures)
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
    return resize_label_map(mask, size, structures) if structures else resize_mask(mask, size)


def read_mask(path: Path, *, rows: int, columns: int, structures: int = 0) -> np.ndarray:
    """F×H×W booleans, or label values 0..``structures`` for a label map; the declared size is
    checked against ``rows`` × ``columns`` before decoding."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask file cannot be read ({exc.strerror})."
        ) from exc
    if head[_DICOM_MAGIC_OFFSET:] == b"DICM" or path.suffix.lower() == ".dcm":
        return _read_dicom(path, rows, columns, structures)
    if path.suffix.lower() == ".npy":
        return _values(_read_numpy(path, rows, columns), structures)
    if path.suffix.lower() in (".nii", ".gz"):
        raise Rejected(
            Reason.MASK_UNREADABLE, "NIfTI masks are not read; convert the mask to PNG or .npy."
        )
    return _values(_read_raster(path, rows, columns), structures)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """F×H×W booleans → F×1×S×S {0, 1}: area-averaged like the image, then cut at one half."""
    import torch  # ingestion imports torch only when it resizes

    tensor = torch.from_numpy(mask.astype(np.float32))[:, None]
    resized = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")
    return (resized >= 0.5).float().numpy()


def resize_label_map(labels: np.ndarray, size: int, structures: int) -> np.ndarray:
    """F×H×W values 0..K → F×1×S×S: each output pixel takes the label covering most of its area
    (ties to the lower label), so a resized map holds only labels that were there."""
    import torch

    onehot = torch.from_numpy(np.eye(structures + 1, dtype=np.float32)[labels.astype(np.int64)])
    area = torch.nn.functional.interpolate(
        onehot.permute(0, 3, 1, 2), size=(size, size), mode="area"
    )
    return area.argmax(dim=1, keepdim=True).float().numpy()


def _values(values: np.ndarray, structures: int) -> np.ndarray:
    """Booleans of foreground (binary run) or the checked label values of a label map."""
    if not structures:
        return _foreground(values)
    if values.dtype == bool:
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating) and not (
        np.isfinite(values).all() and (values == np.round(values)).all()
    ):
        raise Rejected(
            Reason.MASK_UNREADABLE, "A label map must hold whole numbers (label values 0..K)."
        )
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > structures:
        raise Rejected(
            Reason.MASK_UNKNOWN_LABEL,
            f"The label map holds value {high if high > structures else low}; the run's "
            f"{structures} structures are 1..{structures} (0 is background). Relabel the mask "
            "or add the structure to the run's classes.",
        )
    return values.astype(np.int64)


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
    return values[None]


def open_numpy(path: Path) -> np.ndarray:
    """A .npy mask memory-mapped (no voxel read yet), or MASK_UNREADABLE; pickles are refused."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask is not a NumPy array file ({type(exc).__name__})."
        ) from exc


def _read_numpy(path: Path, rows: int, columns: int) -> np.ndarray:
    values = open_numpy(path)
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
    return values if values.ndim == 3 else values[None]


def _read_dicom(path: Path, rows: int, columns: int, structures: int) -> np.ndarray:
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
        return _segments_of_one_image(values, dataset, structures)
    return _values(values, structures)


def _declared_frames(dataset: Any) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _segments_of_one_image(values: np.ndarray, dataset: Any, structures: int) -> np.ndarray:
    """A SEG's frames are (segment, source frame) pairs; for a single-frame source every segment is
    merged into one finding mask, or for a label map segment k paints label k. Multi-frame
    sources need the frame mapping: refused, with the fix."""
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
    if not structures:
        return np.asarray(_foreground(values).any(axis=0, keepdims=True))
    painted = np.zeros((1, *values.shape[1:]), np.int64)
    for segment, frame in zip(_frame_segments(dataset, len(values)), values, strict=True):
        if not 1 <= segment <= structures:
            raise Rejected(
                Reason.MASK_UNKNOWN_LABEL,
                f"The SEG has segment {segment}; the run's {structures} structures are "
                f"1..{structures}. Export the run's segments only, numbered in its class order.",
            )
        painted[0][_foreground(frame)] = segment
    return painted


def _frame_segments(dataset: Any, frames: int) -> list[int]:
    """The segment number of each SEG frame (per-frame functional groups; frame i is segment i + 1
    when a SEG does not say)."""
    groups = dataset.get("PerFrameFunctionalGroupsSequence", [])
    try:
        numbers = [
            int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for group in groups
        ]
    except (AttributeError, IndexError, TypeError, ValueError):
        numbers = []
    return numbers if len(numbers) == frames else list(range(1, frames + 1))
