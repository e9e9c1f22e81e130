"""Read and vet a DICOM header before any pixel is decoded.

Everything that can be checked from the header is checked here, so a crafted
or damaged file is rejected before a decoder allocates memory for it:
object type, transfer syntax and decoder availability, declared sizes
against the site's limits, and the stored pixel length against the file size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, JPEGExtended12Bit

from fedscan.common.errors import Rejected
from fedscan.common.ingest.rejections import Reason

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_DEFER_BYTES = 64 * 1024
_NON_IMAGE_HINTS = (
    "Report",
    "SR ",
    "RT ",
    "Presentation State",
    "Key Object",
    "Waveform",
    "Encapsulated",
    "Directory",
    "Segmentation",
    "Registration",
    "Raw Data",
    "Structured",
)

# The package that brings a decoder, by transfer-syntax family (pydicom names only its own plugins).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pillow or python-gdcm",
    "1.2.840.10008.1.2.4.51": "python-gdcm",
    "1.2.840.10008.1.2.4.57": "python-gdcm (or pylibjpeg-libjpeg, GPL: pip install 'fedscan[gpl]')",
    "1.2.840.10008.1.2.4.70": "python-gdcm (or pylibjpeg-libjpeg, GPL: pip install 'fedscan[gpl]')",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


@dataclass(frozen=True)
class DecodeLimits:
    """What a site accepts before decoding; a header beyond these is ``OUT_OF_RANGE``."""

    max_file_bytes: int = 2 * 1024**3
    max_pixel_bytes: int = 1024**3
    max_side: int = 16384
    min_side: int = 8
    max_frames: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.min_side <= self.max_side:
            raise ValueError("Decode limits need 1 ≤ min_side ≤ max_side.")
        if min(self.max_file_bytes, self.max_pixel_bytes, self.max_frames) < 1:
            raise ValueError("Decode limits must be positive.")


@dataclass(frozen=True)
class ImageGeometry:
    """Declared image size, from the header."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int

    @property
    def native_bytes(self) -> int:
        pixels = self.rows * self.columns * self.frames * self.samples
        return (
            (pixels + 7) // 8 if self.bits_allocated == 1 else pixels * (self.bits_allocated // 8)
        )


def read_header(path: Path, limits: DecodeLimits) -> Dataset:
    """Parse ``path`` with large values deferred; raise :class:`Rejected` when unusable."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise Rejected(Reason.UNREADABLE, f"The file cannot be read ({exc.strerror}).") from exc
    if size > limits.max_file_bytes:
        raise Rejected(
            Reason.OUT_OF_RANGE,
            f"The file is {size} bytes, above the {limits.max_file_bytes} byte limit.",
        )
    has_preamble = head[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=not has_preamble)
    except EOFError as exc:
        raise Rejected(Reason.TRUNCATED, "The file ends inside its DICOM header.") from exc
    except (InvalidDicomError, Exception) as exc:  # parsers raise many types on garbage
        raise Rejected(
            Reason.NOT_DICOM, f"Not a readable DICOM file ({type(exc).__name__})."
        ) from exc
    if not has_preamble and not _looks_like_dicom(ds):
        raise Rejected(Reason.NOT_DICOM, "No DICOM preamble and no recognisable DICOM attributes.")
    if _ends_inside_an_element(ds, size):
        raise Rejected(Reason.TRUNCATED, "The file ends inside a DICOM element.")
    return ds


def _ends_inside_an_element(ds: Dataset, size: int) -> bool:
    """pydicom reads a cut file quietly: the last element must end exactly at the end of the
    file."""
    tags = list(ds.keys())
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if not tags or (tsyntax.is_transfer_syntax and tsyntax.is_deflated):
        return False  # nothing to measure, or positions refer to the inflated stream
    last = ds.get_item(max(tags), keep_deferred=True)
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    return tell + length != size


def _looks_like_dicom(ds: Dataset) -> bool:
    # force=True parses any bytes; a real preamble-less file still has an identity or image module
    return any(tag in ds for tag in (0x00080016, 0x00080018, 0x00280010, *PIXEL_TAGS))


def check_object(ds: Dataset) -> None:
    """Reject non-image objects and image objects without pixels."""
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    class_name = sop_class.name if sop_class.is_valid and sop_class.name != str(sop_class) else ""
    is_image_class = "Image" in class_name
    if "DirectoryRecordSequence" in ds:
        raise Rejected(Reason.NON_IMAGE_OBJECT, "A DICOMDIR (media directory) is not an image.")
    if not any(tag in ds for tag in PIXEL_TAGS):
        if class_name and not is_image_class:
            raise Rejected(Reason.NON_IMAGE_OBJECT, f"A {class_name} object is not an image.")
        raise Rejected(Reason.NO_PIXEL_DATA, "The DICOM object has no pixel data.")
    if class_name and not is_image_class and any(hint in class_name for hint in _NON_IMAGE_HINTS):
        raise Rejected(
            Reason.NON_IMAGE_OBJECT, f"A {class_name} object holds no image to train on."
        )


def check_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax of the pixel data; reject unknown ones or ones with no decoder here."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if not tsyntax:  # no meta: the encoding pydicom detected while parsing
        implicit, little = ds.original_encoding
        tsyntax = UID(
            "1.2.840.10008.1.2"
            if implicit
            else "1.2.840.10008.1.2.1"
            if little
            else "1.2.840.10008.1.2.2"
        )
    if not tsyntax.is_transfer_syntax:
        raise Rejected(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"Transfer syntax {tsyntax} is not a known DICOM transfer syntax.",
        )
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise Rejected(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX, f"No pixel decoder exists for {tsyntax.name}."
        ) from exc
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(tsyntax), "a pydicom pixel-data plugin")
        raise Rejected(
            Reason.DECODER_MISSING, f"{tsyntax.name} needs a decoder: install {package}."
        )
    bits_stored = int(ds.get("BitsStored") or 8)
    if (
        tsyntax == JPEGExtended12Bit
        and bits_stored > 8
        and "pylibjpeg" not in decoder.available_plugins
    ):
        # Pillow and GDCM decode only 8-bit JPEG Extended; 12-bit needs libjpeg, which is GPL.
        raise Rejected(
            Reason.DECODER_MISSING,
            "12-bit JPEG Extended needs pylibjpeg-libjpeg (GPL): pip install 'fedscan[gpl]'.",
        )
    return tsyntax


def check_geometry(ds: Dataset, limits: DecodeLimits) -> ImageGeometry:
    """Declared sizes, validated against the limits before anything is decoded."""
    missing = [name for name in ("Rows", "Columns", "BitsAllocated") if ds.get(name) in (None, "")]
    if missing:
        raise Rejected(
            Reason.INCOMPLETE_HEADER, f"Required image attribute(s) missing: {', '.join(missing)}."
        )
    try:
        geometry = ImageGeometry(
            int(ds.Rows),
            int(ds.Columns),
            int(ds.get("NumberOfFrames") or 1),
            int(ds.get("SamplesPerPixel") or 1),
            int(ds.BitsAllocated),
        )
    except (TypeError, ValueError) as exc:
        raise Rejected(Reason.OUT_OF_RANGE, "An image size attribute is not a number.") from exc
    _check_limits(geometry, limits)
    return geometry


def _check_limits(geometry: ImageGeometry, limits: DecodeLimits) -> None:
    sides_ok = all(
        limits.min_side <= side <= limits.max_side for side in (geometry.rows, geometry.columns)
    )
    problems = [
        (
            not sides_ok,
            f"image is {geometry.rows}×{geometry.columns}; sides must be "
            f"{limits.min_side}..{limits.max_side}",
        ),
        (
            not 1 <= geometry.frames <= limits.max_frames,
            f"{geometry.frames} frames (limit {limits.max_frames})",
        ),
        (geometry.samples not in (1, 3), f"{geometry.samples} samples per pixel (1 or 3 expected)"),
        (
            geometry.bits_allocated not in (1, 8, 16, 32, 64),
            f"BitsAllocated {geometry.bits_allocated}",
        ),
    ]
    for failed, what in problems:
        if failed:
            raise Rejected(Reason.OUT_OF_RANGE, f"Declared {what}.")
    if geometry.native_bytes > limits.max_pixel_bytes:
        raise Rejected(
            Reason.OUT_OF_RANGE,
            f"Decoded pixels would need {geometry.native_bytes} bytes, above "
            f"the {limits.max_pixel_bytes} byte limit.",
        )


def check_native_length(ds: Dataset, path: Path, tsyntax: UID, geometry: ImageGeometry) -> None:
    """For uncompressed pixel data: the stored bytes must cover what the header declares."""
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    if element is None or tsyntax.is_compressed:
        return
    expected = geometry.native_bytes
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma shared by pixel pairs: 2 values per pixel, not 3
    length = getattr(element, "length", None)
    value_tell = getattr(element, "value_tell", None)
    if length is None:  # already read (small file): measure the value itself
        length = len(ds.PixelData)
    elif (
        value_tell is not None
        and not tsyntax.is_deflated
        and value_tell + length > os.path.getsize(path)
    ):
        raise Rejected(Reason.TRUNCATED, "The file ends inside its pixel data.")
    if length < expected:
        raise Rejected(
            Reason.PIXEL_LENGTH_MISMATCH,
            f"Pixel data holds {length} bytes; the header declares {expected}.",
        )
