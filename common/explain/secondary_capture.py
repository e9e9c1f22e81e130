"""A DICOM Secondary Capture of an overlay, so the hospital's PACS viewer can show it beside the
image it explains (``fedscan explain --dicom-sc``).

Choice of identifiers: the capture must file under the same patient and study in the site's own
PACS, so exactly these are copied from the source image's header: PatientName, PatientID,
PatientBirthDate, PatientSex (Patient module), StudyInstanceUID, StudyDate, StudyTime, StudyID,
AccessionNumber and ReferringPhysicianName (General Study module), plus the source's SOP Class and
Instance UIDs in SourceImageSequence (which image it explains). Nothing else is copied — no
institution, station, device serial, operator, other patient attributes or private tags. The
series and the instance get new UIDs (one series per ``explain`` run). A source that is not DICOM
(PNG, JPEG) gives a capture with empty patient and new study attributes: the PACS cannot file it
with a study, and the log says so.

Invariants: 8-bit RGB, explicit VR little endian, Secondary Capture Image Storage; the score text is
burned into the pixels (BurnedInAnnotation YES); the file is written at the site, never sent.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

log = logging.getLogger(__name__)

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
COPIED = (*PATIENT, *STUDY)


def source_header(path: Path) -> Dataset | None:
    """The source image's header (no pixels), or None when it is not a readable DICOM file."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        return None


def secondary_capture(
    pixels: np.ndarray,
    source: Dataset | None,
    *,
    series_uid: str,
    number: int,
    description: str,
) -> Dataset:
    """A Secondary Capture dataset of ``pixels`` (H × W × 3 uint8) filed with ``source``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    _copy_identifiers(ds, source)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 9900, number
    ds.SeriesDescription = "fedscan explanation maps (not for diagnosis)"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = description[:1024]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def _copy_identifiers(ds: Dataset, source: Dataset | None) -> None:
    for keyword in PATIENT + ("StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, keyword, "")  # type 2: present, empty unless the source has it
    ds.StudyInstanceUID = generate_uid()
    if source is None:
        log.warning("explain: a source is not DICOM; its capture has no patient or study")
        return
    for keyword in COPIED:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    if "SOPInstanceUID" in source and "SOPClassUID" in source:
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.SourceImageSequence = [reference]


def write_capture(path: Path, dataset: Dataset) -> None:
    """Write ``dataset`` as a DICOM file (with its preamble and file meta)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
