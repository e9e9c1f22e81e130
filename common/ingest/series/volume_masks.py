"""3-D masks for a planned series, checked against its geometry before any voxel is read.

A mask (the labels CSV's mask column, relative to the site folder) is one of:

- ``.npy`` — slices × rows × columns, slices in the series' order along the slice normal
  (ascending ImagePositionPatient · normal, the order ``fedscan data check --report`` lists);
- NIfTI (``.nii``, ``.nii.gz``, read with nibabel) — columns × rows × slices; its affine must be
  the series' own (RAS, within a tenth of a voxel), the slice axis either way;
- DICOM SEG — one frame per (segment, source slice); each frame names its slice by the SOP
  Instance UID (and frame number) it was derived from, so file order does not matter.

Binary runs read non-zero (≥ 0.5 for floats) as foreground and merge a SEG's segments; a label map
of K structures needs whole numbers 0..K (SEG segment k = label k). Failures reject the series
with MASK_UNREADABLE, MASK_MISMATCH or MASK_UNKNOWN_LABEL and a message without paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.masks import SEGMENTATION_STORAGE, _values, open_numpy
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.series.geometry import SeriesPlan

_NIFTI = (".nii", ".nii.gz")
_AFFINE_TOLERANCE = 0.1  # of a voxel: how far the NIfTI's grid may sit from the series'


def load_volume_mask(path: Path, plan: SeriesPlan, structures: int) -> np.ndarray:
    """The mask as slices × rows × columns integers in the plan's slice order (0/1, or 0..K)."""
    name = path.name.lower()
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The mask file cannot be read ({exc.strerror})."
        ) from exc
    if name.endswith(".npy"):
        return _read_numpy(path, plan, structures)
    if name.endswith(_NIFTI):
        return _read_nifti(path, plan, structures)
    if head[128:132] == b"DICM" or name.endswith(".dcm"):
        return _read_seg(path, plan, structures)
    raise Rejected(
        Reason.MASK_UNREADABLE, "A volume's mask must be .npy, NIfTI (.nii, .nii.gz) or DICOM SEG."
    )


def _mismatch(found: tuple[int, ...], plan: SeriesPlan, how: str) -> Rejected:
    return Rejected(
        Reason.MASK_MISMATCH,
        f"The mask is {'×'.join(map(str, found))} ({how}); its series is "
        f"{'×'.join(map(str, plan.shape))} (slices × rows × columns).",
    )


def _as_labels(values: np.ndarray, structures: int) -> np.ndarray:
    return _values(values, structures).astype(np.int64)


def _read_numpy(path: Path, plan: SeriesPlan, structures: int) -> np.ndarray:
    values = open_numpy(path)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise Rejected(Reason.MASK_UNREADABLE, f"A .npy mask must be numeric, not {values.dtype}.")
    if tuple(values.shape) != plan.shape:
        raise _mismatch(tuple(values.shape), plan, "slices × rows × columns")
    return _as_labels(np.asarray(values), structures)


def series_affine(plan: SeriesPlan) -> np.ndarray:
    """The series' voxel (column, row, slice) → patient RAS (mm) affine, as NIfTI writes it."""
    first = plan.slices[0]
    row, column = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    affine = np.eye(4)
    affine[:3, 0] = row * first.spacing[1]
    affine[:3, 1] = column * first.spacing[0]
    affine[:3, 2] = np.cross(row, column) * plan.spacing[0]
    affine[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS (DICOM) → RAS (NIfTI)


def _read_nifti(path: Path, plan: SeriesPlan, structures: int) -> np.ndarray:
    import nibabel

    try:
        image: Any = nibabel.load(str(path))  # header only: voxels are read below, if at all
        shape, affine = tuple(int(n) for n in image.shape), np.asarray(image.affine)
    except Exception as exc:  # nibabel raises many types on a damaged header
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The NIfTI mask cannot be read ({type(exc).__name__})."
        ) from exc
    slices, rows, columns = plan.shape
    if shape[:3] != (columns, rows, slices) or any(n != 1 for n in shape[3:]):
        raise _mismatch(shape, plan, "NIfTI columns × rows × slices")
    expected = series_affine(plan)
    reversed_ = expected.copy()
    reversed_[:3, 2] = -expected[:3, 2]
    reversed_[:3, 3] = expected[:3, 3] + expected[:3, 2] * (slices - 1)
    tolerance = _AFFINE_TOLERANCE * min(plan.spacing)
    forward = np.allclose(affine, expected, atol=tolerance, rtol=0)
    if not forward and not np.allclose(affine, reversed_, atol=tolerance, rtol=0):
        raise Rejected(
            Reason.MASK_MISMATCH,
            "The NIfTI mask's affine does not place it on its series' voxels (origin, directions "
            "or spacing differ): export the mask from this series.",
        )
    try:
        values = np.asarray(image.dataobj).reshape(columns, rows, slices).transpose(2, 1, 0)
    except Exception as exc:  # a truncated .nii.gz raises EOFError, a short .nii ValueError
        raise Rejected(
            Reason.MASK_UNREADABLE,
            f"The NIfTI mask's voxels cannot be read ({type(exc).__name__}).",
        ) from exc
    return _as_labels(values if forward else values[::-1], structures)


def _read_seg(path: Path, plan: SeriesPlan, structures: int) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size="64 KB")
        if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
            raise Rejected(Reason.MASK_UNREADABLE, "A DICOM mask of a volume must be a SEG.")
        slices, rows, columns = plan.shape
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise _mismatch((int(ds.Rows), int(ds.Columns)), plan, "SEG rows × columns")
        targets = _seg_targets(ds, plan)
        frames = np.asarray(ds.pixel_array).reshape(len(targets), rows, columns)
    except Rejected:
        raise
    except Exception as exc:  # a damaged SEG costs its series, never the ingestion
        raise Rejected(
            Reason.MASK_UNREADABLE, f"The DICOM SEG cannot be decoded ({type(exc).__name__})."
        ) from exc
    painted = np.zeros(plan.shape, np.int64)
    for (index, segment), frame in zip(targets, frames, strict=True):
        if structures and not 1 <= segment <= structures:
            raise Rejected(
                Reason.MASK_UNKNOWN_LABEL,
                f"The SEG has segment {segment}; the run's {structures} structures are "
                f"1..{structures}.",
            )
        painted[index][frame != 0] = segment if structures else 1
    return painted


def _seg_targets(ds: Any, plan: SeriesPlan) -> list[tuple[int, int]]:
    """(slice index in the plan, segment number) of every SEG frame."""
    where = {(s.instance, s.frame): i for i, s in enumerate(plan.slices)}
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    declared = int(ds.get("NumberOfFrames") or 1)
    if len(groups) != declared:
        raise Rejected(
            Reason.MASK_MISMATCH,
            f"The SEG declares {declared} frames but describes {len(groups)}.",
        )
    targets = []
    for group in groups:
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        frame = int(source.get("ReferencedFrameNumber") or 1) - 1
        key = (str(source.ReferencedSOPInstanceUID), frame)
        if key not in where:
            raise Rejected(
                Reason.MASK_MISMATCH, "A SEG frame references a slice that is not in its series."
            )
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        targets.append((where[key], segment))
    return targets
