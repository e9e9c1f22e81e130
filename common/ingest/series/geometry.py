"""Order a series' slices along the slice normal and check it before anything is stacked.

The slice normal is the cross product of ImageOrientationPatient's row and column directions; a
slice's place is its ImagePositionPatient projected on it. File names and InstanceNumber are never
used: sites export them shuffled and reversed. Checks, in order (the first failure is the code):
a localizer mixed in, mixed orientation / size / pixel spacing, mixed rescale or photometric
settings, an oblique plane, too few slices, the volume's size against the limits, duplicate
positions, a gap above 1.5 × the median spacing (a missing slice), and spacing that varies
beyond the tolerance.

The plan also maps the volume's axes (slice, row, column) onto the patient's (LPS): a volume is
always returned in one canonical frame, axis 0 inferior → superior, axis 1 anterior → posterior,
axis 2 right → left, whatever plane and direction the scanner wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedscan.common.errors import Rejected
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.series.slices import Slice

_SAME = 1e-3  # direction cosines and spacings (mm) closer than this are equal
_DUPLICATE_MM = 1e-2  # slices closer than this along the normal share a position
_GAP = 1.5  # a step above 1.5 × the median spacing is a missing slice (issue 20)
# cos 37°: the nearest patient axis of a plane's direction must be within 37°; a steeper tilt is
# a true oblique, which a nearest-axis reorientation would distort.
_AXIS_COSINE = 0.8
_PATIENT_AXES = "LPS"  # x right → left, y anterior → posterior, z inferior → superior


@dataclass(frozen=True)
class SeriesLimits:
    """What a site accepts as a volume (site TOML ``[data]``, with defaults)."""

    min_slices: int = 8
    max_slices: int = 2048
    spacing_tolerance: float = 0.1  # largest |step − median| / median accepted
    max_voxels: int = 512 * 512 * 1024  # 1 GiB as float32: the most one series may allocate

    def __post_init__(self) -> None:
        if not 2 <= self.min_slices <= self.max_slices:
            raise ValueError("Series limits need 2 ≤ min_slices ≤ max_slices.")
        if not 0 < self.spacing_tolerance < _GAP - 1 or self.max_voxels < 1:
            raise ValueError("spacing_tolerance must be in (0, 0.5) and max_voxels positive.")


@dataclass(frozen=True)
class SeriesPlan:
    """A checked series: its slices in order along the normal, its spacing (slice, row, column,
    mm) and how its axes map onto the canonical patient frame."""

    slices: tuple[Slice, ...]
    spacing: tuple[float, float, float]
    axes: tuple[int, int, int]  # patient axis (0 x, 1 y, 2 z) of volume axes 0, 1, 2
    flips: tuple[bool, bool, bool]  # whether each volume axis runs against its patient axis

    @property
    def shape(self) -> tuple[int, int, int]:
        first = self.slices[0]
        return len(self.slices), first.rows, first.columns

    @property
    def orientation(self) -> str:
        """The plane as a radiologist names it, from the slice normal's patient axis."""
        return ("sagittal", "coronal", "axial")[self.axes[0]]

    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel spacing along the canonical axes (z, y, x)."""
        spacing = [0.0, 0.0, 0.0]
        for axis, patient in enumerate(self.axes):
            spacing[2 - patient] = self.spacing[axis]
        return spacing[0], spacing[1], spacing[2]


def plan_series(slices: Sequence[Slice], limits: SeriesLimits) -> SeriesPlan:
    """The ordered, checked series; :class:`Rejected` with the first check that fails."""
    _check_uniform(slices)
    first = slices[0]
    row, column = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row, column)
    if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(column) - 1) < 0.01):
        raise Rejected(Reason.SERIES_NO_GEOMETRY, "ImageOrientationPatient is not unit vectors.")
    if abs(float(row @ column)) > 0.01:
        raise Rejected(Reason.SERIES_NO_GEOMETRY, "ImageOrientationPatient is not orthogonal.")
    axes, flips = _axes(normal, column, row)
    if len(slices) < limits.min_slices:
        raise Rejected(
            Reason.SERIES_TOO_FEW_SLICES,
            f"The series has {len(slices)} slices; a volume needs at least {limits.min_slices}.",
        )
    voxels = len(slices) * first.rows * first.columns
    if len(slices) > limits.max_slices or voxels > limits.max_voxels:
        raise Rejected(
            Reason.OUT_OF_RANGE,
            f"The series declares {len(slices)} slices of {first.rows}×{first.columns}; the "
            f"site's limits are {limits.max_slices} slices and {limits.max_voxels} voxels.",
        )
    ordered = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))
    step = _slice_step(ordered, normal, limits)
    return SeriesPlan(tuple(ordered), (step, *first.spacing), axes, flips)


def _check_uniform(slices: Sequence[Slice]) -> None:
    if any(s.localizer for s in slices):
        raise Rejected(
            Reason.SERIES_LOCALIZER, "A localizer (ImageType LOCALIZER) is part of the series."
        )
    first = slices[0]
    for other in slices[1:]:
        if (other.rows, other.columns) != (first.rows, first.columns) or not (
            np.allclose(other.orientation, first.orientation, atol=_SAME, rtol=0)
            and np.allclose(other.spacing, first.spacing, atol=_SAME, rtol=0)
        ):
            raise Rejected(
                Reason.SERIES_INCONSISTENT,
                "The slices differ in orientation, size (rows × columns) or pixel spacing.",
            )
        if other.rescale != first.rescale or other.photometric != first.photometric:
            raise Rejected(
                Reason.SERIES_MIXED_PIXELS,
                "The slices differ in rescale slope / intercept or photometric interpretation.",
            )
    if first.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise Rejected(
            Reason.SERIES_MIXED_PIXELS, f"A volume needs grayscale slices, not {first.photometric}."
        )


def _axes(*directions: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For the volume's axes (normal, down the rows, along a row): the nearest patient axis and
    whether the direction runs against it."""
    axes, flips = [], []
    for direction in directions:
        nearest = int(np.argmax(np.abs(direction)))
        if abs(direction[nearest]) < _AXIS_COSINE:
            raise Rejected(
                Reason.SERIES_OBLIQUE,
                f"A plane direction is {np.degrees(np.arccos(abs(direction[nearest]))):.0f}° from "
                "the nearest patient axis (at most 37° accepted).",
            )
        axes.append(nearest)
        flips.append(bool(direction[nearest] < 0))
    if len(set(axes)) != 3:
        raise Rejected(Reason.SERIES_OBLIQUE, "Two plane directions share one patient axis.")
    return (axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2])


def _slice_step(ordered: Sequence[Slice], normal: np.ndarray, limits: SeriesLimits) -> float:
    """The median spacing along the normal, after the duplicate, gap and regularity checks."""
    places = np.array([float(np.dot(s.position, normal)) for s in ordered])
    steps = np.diff(places)
    if (steps < _DUPLICATE_MM).any():
        raise Rejected(
            Reason.SERIES_DUPLICATE_POSITION,
            f"{int((steps < _DUPLICATE_MM).sum())} slice(s) share a position along the normal.",
        )
    median = float(np.median(steps))
    if (steps > _GAP * median).any():
        largest = float(steps.max())
        raise Rejected(
            Reason.SERIES_MISSING_SLICE,
            f"A gap of {largest:.2f} mm between slices is above 1.5 × the median {median:.2f} mm.",
        )
    deviation = float(np.abs(steps - median).max()) / median
    if deviation > limits.spacing_tolerance:
        raise Rejected(
            Reason.SERIES_IRREGULAR_SPACING,
            f"Slice spacing varies by {deviation:.0%} of the median {median:.2f} mm (tolerance "
            f"{limits.spacing_tolerance:.0%}).",
        )
    return median
