"""Decode one image file (DICOM, PNG or JPEG) into frames of intensities in [0, 1].

Grayscale DICOM pixel semantics, in order:

1. stored values, signed when PixelRepresentation is 1 (pydicom honours it);
2. Modality LUT — RescaleSlope/Intercept or a Modality LUT Sequence — applied once;
3. VOI: a VOI LUT Sequence, else the first WindowCenter/Width (LINEAR, LINEAR_EXACT or
   SIGMOID, PS3.3 C.11.2.1.2), mapped exactly onto [0, 1]; with neither, the 0.5–99.5
   percentile range of the modality values is stretched to [0, 1];
4. MONOCHROME1 inverted (``1 − v``), so bright always means dense.

Colour (RGB, YBR_* — converted to RGB by pydicom —, PALETTE COLOR) is scaled by its bit
depth, then reduced to luminance (ITU-R BT.601) for 1-channel models or kept for 3.
Multi-frame files give the middle frame or every frame (``frames`` policy).
For volumes (``values = "modality"``) a grayscale frame stops after step 2: the modality values
themselves (HU for CT, exactly slope · stored + intercept, per frame for an enhanced multi-frame
object), unclipped and unscaled; the series' intensity policy maps them later.
This module imports no torch, so decoding can run in a light worker process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.pixels.processing import apply_voi

from fedscan.common import defaults
from fedscan.common.errors import Rejected
from fedscan.common.ingest import dicom_header as header
from fedscan.common.ingest.decoded import Decoded
from fedscan.common.ingest.dicom_header import DecodeLimits
from fedscan.common.ingest.raster import RASTER_SIGNATURES, decode_raster, luminance
from fedscan.common.ingest.rejections import Reason

FRAME_POLICIES = ("middle", "all")
VALUE_KINDS = ("display", "modality")  # [0, 1] after the VOI, or the modality values (volumes)
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = (
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "PALETTE COLOR",
)
HEADER_FIELDS = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
    "Modality",
    "Manufacturer",
    "PhotometricInterpretation",
)


@dataclass(frozen=True)
class DecodeOptions:
    """How files become frames. Part of the cache key: changing it re-decodes."""

    channels: int = 1
    frames: str = defaults.FRAMES
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    values: str = "display"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 (grayscale) or 3 (RGB).")
        if self.frames not in FRAME_POLICIES:
            raise ValueError(
                f"frames must be one of {', '.join(FRAME_POLICIES)}; got {self.frames!r}."
            )
        if self.values not in VALUE_KINDS:
            raise ValueError(f"values must be one of {', '.join(VALUE_KINDS)}.")


def decode_file(path: Path, options: DecodeOptions) -> Decoded:
    """Decode any supported file; raise :class:`Rejected` (never anything else) when unusable."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise Rejected(Reason.UNREADABLE, f"The file cannot be read ({exc.strerror}).") from exc
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # pydicom warns on every tolerated deviation; codes report the rest
        try:
            if head.startswith(RASTER_SIGNATURES):
                return decode_raster(path, channels=options.channels, limits=options.limits)
            return decode_dicom(path, options)
        except Rejected:
            raise
        except MemoryError as exc:
            raise Rejected(
                Reason.OUT_OF_RANGE, "Decoding needed more memory than allowed."
            ) from exc
        except Exception as exc:  # a decoder bug must cost one file, never the ingestion
            raise Rejected(
                Reason.DECODE_FAILED, f"Decoding failed ({type(exc).__name__})."
            ) from exc


def decode_dicom(path: Path, options: DecodeOptions) -> Decoded:
    ds = header.read_header(path, options.limits)
    header.check_object(ds)
    tsyntax = header.check_transfer_syntax(ds)
    geometry = header.check_geometry(ds, options.limits)
    photometric = _check_photometric(ds, geometry)
    header.check_native_length(ds, path, tsyntax, geometry)
    indices = frame_indices(geometry.frames, options.frames)
    if options.values == "modality":
        frames = [
            modality_values(ds, _decode_frame(ds, index), index, photometric) for index in indices
        ]
    else:
        frames = [
            _to_channels(ds, _decode_frame(ds, index), photometric, options.channels)
            for index in indices
        ]
    facts: dict[str, Any] = {name: str(ds.get(name, "") or "") for name in HEADER_FIELDS}
    facts.update(
        format="DICOM",
        TransferSyntax=tsyntax.name,
        Rows=geometry.rows,
        Columns=geometry.columns,
        NumberOfFrames=geometry.frames,
        BitsStored=int(ds.get("BitsStored") or geometry.bits_allocated),
    )
    return Decoded(np.stack(frames).astype(np.float32), facts)


def frame_indices(frames: int, policy: str) -> list[int]:
    """Which frames become samples: the middle one, or all of them."""
    return list(range(frames)) if policy == "all" else [frames // 2]


def _check_photometric(ds: Dataset, geometry: header.ImageGeometry) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric and geometry.samples == 1:
        photometric = "MONOCHROME2"  # the standard's default reading of a single-sample image
    if photometric not in GRAYSCALE + COLOUR:
        raise Rejected(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"Photometric interpretation {photometric!r} is not supported.",
        )
    expected = 1 if photometric in GRAYSCALE or photometric == "PALETTE COLOR" else 3
    if geometry.samples != expected:
        raise Rejected(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"{photometric} with {geometry.samples} samples per pixel is inconsistent.",
        )
    return photometric


def _decode_frame(ds: Dataset, index: int) -> np.ndarray:
    try:
        return pixel_array(ds, index=index)
    except EOFError as exc:
        raise Rejected(Reason.TRUNCATED, "The file ends inside its pixel data.") from exc
    except ValueError as exc:
        if "less than expected" in str(exc):
            raise Rejected(
                Reason.PIXEL_LENGTH_MISMATCH, "Pixel data is shorter than the header declares."
            ) from exc
        raise


def _to_channels(ds: Dataset, raw: np.ndarray, photometric: str, channels: int) -> np.ndarray:
    if photometric in GRAYSCALE:
        gray = grayscale_to_unit(ds, raw)
        return np.repeat(gray[None], channels, axis=0)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds).astype(np.float64)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        rgb, bits = raw.astype(np.float64), int(ds.get("BitsStored") or ds.BitsAllocated)
    rgb = np.clip(rgb / float(2**bits - 1), 0.0, 1.0)
    if float(rgb.max()) == float(rgb.min()):
        raise Rejected(Reason.BLANK_IMAGE, "Every pixel has the same colour.")
    return luminance(rgb)[None] if channels == 1 else np.moveaxis(rgb, -1, 0)


def modality_values(ds: Dataset, raw: np.ndarray, index: int, photometric: str) -> np.ndarray:
    """1×H×W modality values of frame ``index``: slope · stored + intercept in float64 (exact for
    integer stored values), from the top-level Rescale attributes or, in an enhanced multi-frame
    object, the frame's Pixel Value Transformation; a Modality LUT Sequence through pydicom."""
    if photometric not in GRAYSCALE:
        raise Rejected(
            Reason.UNSUPPORTED_PHOTOMETRIC, f"A volume needs grayscale slices, not {photometric}."
        )
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(raw, ds).astype(np.float32)[None]
    slope, intercept = rescale_of(ds, index)
    return (raw.astype(np.float64) * slope + intercept).astype(np.float32)[None]


def rescale_of(ds: Dataset, index: int) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of frame ``index``: per-frame, shared or top-level groups;
    (1, 0) when none is given."""
    sources = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        sources.append(per_frame[index])
    sources.extend(ds.get("SharedFunctionalGroupsSequence") or [])
    for group in sources:
        transform = group.get("PixelValueTransformationSequence")
        if transform:
            return _rescale(transform[0])
    return _rescale(ds)


def _rescale(item: Any) -> tuple[float, float]:
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if intercept in (None, "") else float(intercept),
    )


def grayscale_to_unit(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    """Steps 2–4 of the module docstring for one grayscale frame."""
    values = apply_modality_lut(raw, ds).astype(np.float64)
    if float(values.max()) == float(values.min()):
        raise Rejected(Reason.BLANK_IMAGE, "Every pixel has the same value.")
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        unit = apply_voi(values, ds, index=0).astype(np.float64) / float(2**bits - 1)
    elif (window := _window(ds)) is not None:
        unit = window_to_unit(values, *window, function=str(ds.get("VOILUTFunction", "LINEAR")))
    else:
        low, high = np.percentile(values, [0.5, 99.5])
        if high <= low:
            low, high = float(values.min()), float(values.max())
        unit = (values - low) / (high - low)
    unit = np.clip(unit, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _window(ds: Dataset) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return None
    center, width = _first_number(center), _first_number(width)
    return (
        (center, width) if width >= 1.0 else None
    )  # PS3.3: width ≥ 1; otherwise ignore the window


def _first_number(value: Any) -> float:
    """The first of a multi-valued window attribute (the default window)."""
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def window_to_unit(
    values: np.ndarray, center: float, width: float, *, function: str = "LINEAR"
) -> np.ndarray:
    """The DICOM VOI window function with output range [0, 1]."""
    function = function.strip().upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1.0:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
