"""The closed list of reasons a site file does not become a training sample.

Every file a site scans ends *accepted* or *rejected* with exactly one of
these codes. Codes are stable strings (reports and the coordinator's counts
use them); each carries the action that fixes it. Messages built from them
never contain file paths or patient data, so counts by code may leave a site.
The exception that carries a code is :class:`fedscan.common.errors.Rejected`.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a file was rejected. The value is the stable code."""

    UNREADABLE = "UNREADABLE"
    NOT_DICOM = "NOT_DICOM"
    TRUNCATED = "TRUNCATED"
    NON_IMAGE_OBJECT = "NON_IMAGE_OBJECT"
    NO_PIXEL_DATA = "NO_PIXEL_DATA"
    INCOMPLETE_HEADER = "INCOMPLETE_HEADER"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    PIXEL_LENGTH_MISMATCH = "PIXEL_LENGTH_MISMATCH"
    UNSUPPORTED_TRANSFER_SYNTAX = "UNSUPPORTED_TRANSFER_SYNTAX"
    DECODER_MISSING = "DECODER_MISSING"
    DECODE_FAILED = "DECODE_FAILED"
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    UNSUPPORTED_PHOTOMETRIC = "UNSUPPORTED_PHOTOMETRIC"
    BLANK_IMAGE = "BLANK_IMAGE"
    LABEL_MISSING = "LABEL_MISSING"
    LABEL_INVALID = "LABEL_INVALID"
    LABEL_UNKNOWN_CLASS = "LABEL_UNKNOWN_CLASS"
    DUPLICATE_INSTANCE = "DUPLICATE_INSTANCE"
    MASK_MISSING = "MASK_MISSING"
    MASK_UNREADABLE = "MASK_UNREADABLE"
    MASK_MISMATCH = "MASK_MISMATCH"
    MASK_UNKNOWN_LABEL = "MASK_UNKNOWN_LABEL"
    # Volumes (a CT or MR series assembled from its slices): one code per series.
    SERIES_NO_GEOMETRY = "SERIES_NO_GEOMETRY"
    SERIES_INCONSISTENT = "SERIES_INCONSISTENT"
    SERIES_MIXED_PIXELS = "SERIES_MIXED_PIXELS"
    SERIES_LOCALIZER = "SERIES_LOCALIZER"
    SERIES_OBLIQUE = "SERIES_OBLIQUE"
    SERIES_TOO_FEW_SLICES = "SERIES_TOO_FEW_SLICES"
    SERIES_DUPLICATE_POSITION = "SERIES_DUPLICATE_POSITION"
    SERIES_MISSING_SLICE = "SERIES_MISSING_SLICE"
    SERIES_IRREGULAR_SPACING = "SERIES_IRREGULAR_SPACING"
    SERIES_FRAME_COUNT = "SERIES_FRAME_COUNT"

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    Reason.UNREADABLE: "check the file's permissions for the account running fedscan",
    Reason.NOT_DICOM: "remove it from the data folder, or convert it to DICOM, PNG or JPEG",
    Reason.TRUNCATED: "the file ends early: copy it again from the archive (PACS)",
    Reason.NON_IMAGE_OBJECT: (
        "reports, structures, plans and waveforms are not images; move them out"
    ),
    Reason.NO_PIXEL_DATA: "the image object holds no pixels: re-export it from the archive",
    Reason.INCOMPLETE_HEADER: (
        "a required image attribute (Rows, Columns, BitsAllocated) is missing: re-export the file"
    ),
    Reason.OUT_OF_RANGE: (
        "declared size or bit depth is beyond the limits; check the header or raise the site's "
        "ingestion limits"
    ),
    Reason.PIXEL_LENGTH_MISMATCH: (
        "pixel data length disagrees with Rows×Columns×Frames×bits: re-export the file"
    ),
    Reason.UNSUPPORTED_TRANSFER_SYNTAX: (
        "the transfer syntax is unknown or not an image encoding; re-export as Explicit VR Little "
        "Endian"
    ),
    Reason.DECODER_MISSING: "install the decoder package named in the message",
    Reason.DECODE_FAILED: "the pixel data is corrupt or the codec failed; re-export the file",
    Reason.DECODE_TIMEOUT: (
        "decoding exceeded the per-file time limit; check the file or raise the limit"
    ),
    Reason.UNSUPPORTED_PHOTOMETRIC: (
        "only grayscale, RGB, YBR and palette colour images are supported"
    ),
    Reason.BLANK_IMAGE: (
        "every pixel has the same value after the LUTs; the image carries no content"
    ),
    Reason.LABEL_MISSING: "add a row for this image to the labels CSV (or check --key)",
    Reason.LABEL_UNKNOWN_CLASS: (
        "the row names a class or finding the run did not declare: correct the row, or ask the "
        "coordinator operator to add the class to the run's classes"
    ),
    Reason.LABEL_INVALID: (
        "labels must be 0 or 1 (binary), a class (multiclass) or 0/1 per finding (multilabel), "
        "and one key must not have two different labels"
    ),
    Reason.DUPLICATE_INSTANCE: (
        "another file holds the same SOP Instance UID or bytes; remove the copy"
    ),
    Reason.MASK_MISSING: (
        "segmentation needs a mask per image: fill the image's cell in the labels CSV's mask "
        "column with the mask file's path (relative to the site folder)"
    ),
    Reason.MASK_UNREADABLE: (
        "the mask file is missing, corrupt or not PNG, NumPy (.npy) or DICOM (SEG or an image): "
        "re-export it"
    ),
    Reason.MASK_MISMATCH: (
        "the mask's size (rows × columns, frames) must equal its image's: re-export the mask for "
        "this image"
    ),
    Reason.MASK_UNKNOWN_LABEL: (
        "the label map holds a value (or a SEG a segment) outside the run's structures 1..K: "
        "relabel the mask, or ask the coordinator operator to add the structure to the run's "
        "classes"
    ),
    Reason.SERIES_NO_GEOMETRY: (
        "a slice lacks a usable ImagePositionPatient, ImageOrientationPatient or PixelSpacing "
        "(or a SeriesInstanceUID): re-export the series from the archive with its geometry"
    ),
    Reason.SERIES_INCONSISTENT: (
        "the series' slices differ in orientation, size or pixel spacing: export each "
        "acquisition as its own series"
    ),
    Reason.SERIES_MIXED_PIXELS: (
        "the slices differ in rescale slope/intercept or photometric interpretation, or are "
        "colour: re-export the series with one pixel encoding"
    ),
    Reason.SERIES_LOCALIZER: (
        "a localizer (scout) image is mixed into the series: move it out of the series' folder "
        "or give it its own SeriesInstanceUID"
    ),
    Reason.SERIES_OBLIQUE: (
        "the slices are tilted more than 37° from every patient axis: reformat the series to "
        "axial, coronal or sagittal at the scanner or workstation"
    ),
    Reason.SERIES_TOO_FEW_SLICES: (
        "the series has fewer slices than a volume needs: export the full series, or lower the "
        "site's min-slices"
    ),
    Reason.SERIES_DUPLICATE_POSITION: (
        "two slices share a position along the slice normal: remove the duplicate (often a "
        "second reconstruction filed under the same series)"
    ),
    Reason.SERIES_MISSING_SLICE: (
        "a gap between slices exceeds 1.5 × the median spacing: a slice is missing; copy the "
        "whole series again from the archive (PACS)"
    ),
    Reason.SERIES_IRREGULAR_SPACING: (
        "slice spacing varies beyond the tolerance: export a series reconstructed at one "
        "spacing, or raise the site's spacing-tolerance"
    ),
    Reason.SERIES_FRAME_COUNT: (
        "a multi-frame object's per-frame geometry does not match its NumberOfFrames: "
        "re-export the object"
    ),
}

#: Rejections that depend on this machine or moment, not on the file: never cached.
TRANSIENT = frozenset({Reason.UNREADABLE, Reason.DECODER_MISSING, Reason.DECODE_TIMEOUT})
