"""Build small DICOM files with exactly known pixels, in any transfer syntax the tests need."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from copy import deepcopy
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

FIXTURES = Path(__file__).parent / "fixtures"


def image_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    patient_id: str = "P0",
) -> Dataset:
    """A CT image object around ``pixels`` (H×W, F×H×W, or H×W×3 for RGB); signed when the dtype
    is."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.PatientID, ds.Modality = generate_uid(), patient_id, "CT"
    colour = photometric == "RGB"
    frames = pixels.shape[0] if pixels.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def compressed_copy(ds: Dataset, path: Path, tsyntax: UID, **encoder_options: object) -> Path:
    """``ds`` re-encoded by pydicom's own encoders (RLE, JPEG-LS, JPEG 2000)."""
    copy = deepcopy(ds)
    copy.compress(tsyntax, **encoder_options)
    return write(copy, path)


def jpeg_baseline_copy(ds: Dataset, path: Path, quality: int = 95) -> Path:
    """An 8-bit grayscale ``ds`` as JPEG Baseline, encoded by Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    copy = deepcopy(ds)
    copy.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    copy.PixelData = encapsulate([buffer.getvalue()])
    copy["PixelData"].VR = "OB"
    return write(copy, path)


def gdcm_copy(source: Path, path: Path, gdcm_syntax: str) -> Path:
    """Re-encode with GDCM (JPEG Lossless); in a child process, as GDCM may abort at teardown."""
    script = textwrap.dedent(f"""
        import gdcm, os
        reader = gdcm.ImageReader(); reader.SetFileName({str(source)!r}); assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.{gdcm_syntax}))
        change.SetInput(reader.GetImage()); assert change.Change()
        writer = gdcm.ImageWriter(); writer.SetFileName({str(path)!r})
        writer.SetFile(reader.GetFile()); writer.SetImage(change.GetOutput()); assert writer.Write()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    return path


def htj2k_reference() -> np.ndarray:
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_htj2k import reference_image
    finally:
        sys.path.pop(0)
    return reference_image()


def htj2k_copy(path: Path, window: tuple[float, float]) -> Path:
    """The committed HTJ2K codestream of :func:`htj2k_reference`, as a DICOM file."""
    ds = image_dataset(htj2k_reference(), bits_stored=12, window=window)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.201")  # HTJ2K Lossless
    ds.PixelData = encapsulate([(FIXTURES / "htj2k_lossless.j2c").read_bytes()])
    ds["PixelData"].VR = "OB"
    return write(ds, path)


def segmentation_dataset(mask: np.ndarray, segments: int = 1) -> Dataset:
    """A minimal binary DICOM Segmentation of one single-frame image: ``segments`` frames, the first
    holding the mask's left half and the last its right half (so they merge back into ``mask``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.SegmentationType = "SEG", "BINARY"
    ds.Rows, ds.Columns = mask.shape
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = segments, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SegmentSequence = [Dataset() for _ in range(segments)]
    for number, item in enumerate(ds.SegmentSequence, start=1):
        item.SegmentNumber, item.SegmentLabel = number, f"finding {number}"
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = generate_uid()
    series = Dataset()
    series.ReferencedInstanceSequence = [reference]
    ds.ReferencedSeriesSequence = [series]
    halves = np.zeros((segments, *mask.shape), dtype=np.uint8)
    halves[0, :, : mask.shape[1] // 2] = mask[:, : mask.shape[1] // 2]
    halves[-1, :, mask.shape[1] // 2 :] = mask[:, mask.shape[1] // 2 :]
    ds.PixelData = pack_bits(halves)
    return ds
