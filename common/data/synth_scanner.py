"""The synthetic sites' scanners and DICOM headers: how a phantom's density becomes a file.

Each site imitates a different scanner (bit depth, rescale, photometric interpretation, size,
noise, contrast) and a different binary case mix; the first three sites are fixed reference
scanners, later ones are drawn from the seed and the site index alone. Headers hold realistic but
fake patient data so privacy tests have identifiers to look for. Nothing here draws from a
generator it was not handed, so a site's files are byte-for-byte deterministic for a seed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_FIRST_NAMES = (
    "Ada",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Elif",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
)
_LAST_NAMES = ("Alvarez", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat")


@dataclass(frozen=True)
class ScannerProfile:
    """How one synthetic site's scanner stores its images."""

    manufacturer: str
    bits_stored: int
    rows: int
    columns: int
    rescale_slope: float
    rescale_intercept: float
    photometric: str
    noise: float
    contrast: float
    prevalence: float


_PROFILES = (
    ScannerProfile("Acme Radiology", 8, 128, 128, 1.0, 0.0, "MONOCHROME2", 0.03, 1.00, 0.50),
    ScannerProfile("Borealis Imaging", 12, 160, 144, 1.0, -1024.0, "MONOCHROME1", 0.05, 0.85, 0.35),
    ScannerProfile("Cygnus Medical", 16, 176, 192, 0.5, -100.0, "MONOCHROME2", 0.04, 1.15, 0.60),
)


def site_profile(site_index: int, seed: int) -> ScannerProfile:
    """Profile of a site: the three reference scanners first, then random mixes."""
    if site_index < len(_PROFILES):
        return _PROFILES[site_index]
    rng = np.random.default_rng([seed, site_index, 7])
    base = _PROFILES[site_index % len(_PROFILES)]
    return ScannerProfile(
        manufacturer=f"{base.manufacturer} {site_index}",
        bits_stored=int(rng.choice([8, 12, 16])),
        rows=int(rng.integers(112, 200)),
        columns=int(rng.integers(112, 200)),
        rescale_slope=float(rng.choice([1.0, 0.5, 2.0])),
        rescale_intercept=float(rng.choice([0.0, -1024.0, -100.0])),
        photometric=str(rng.choice(["MONOCHROME1", "MONOCHROME2"])),
        noise=float(rng.uniform(0.02, 0.06)),
        contrast=float(rng.uniform(0.8, 1.2)),
        prevalence=float(rng.uniform(0.3, 0.65)),
    )


def to_stored(density: np.ndarray, profile: ScannerProfile, rng: np.random.Generator) -> np.ndarray:
    """Scanner response: contrast, noise, inversion, then quantisation to stored values."""
    signal = np.clip(0.5 + (density - 0.5) * profile.contrast, 0.0, 1.0)
    signal = np.clip(signal + rng.normal(0.0, profile.noise, signal.shape), 0.0, 1.0)
    if profile.photometric == "MONOCHROME1":
        signal = 1.0 - signal  # stored high = displayed dark
    max_stored = 2**profile.bits_stored - 1
    # Use most of the stored range, as detectors do, after the modality LUT.
    stored = np.round(signal * max_stored * 0.9 + max_stored * 0.05)
    return stored.astype(np.uint8 if profile.bits_stored == 8 else np.uint16)


def patient_number(case: int) -> int:
    """Every fifth image is a follow-up of the previous case's patient (tests the patient split)."""
    return case - 1 if case % 5 == 1 else case


def fake_patient(rng: np.random.Generator, site_index: int, case: int) -> dict[str, str]:
    """Realistic but invented identifiers, for the de-identification tests to find."""
    first = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]
    last = _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
    birth = datetime.date(1940, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 25000)))
    return {
        "PatientName": f"{last}^{first}",
        "PatientID": f"S{site_index:02d}P{patient_number(case):05d}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": str(rng.choice(["F", "M"])),
        "AccessionNumber": f"A{site_index:02d}{case:06d}",
    }


def build_dataset(
    pixels: np.ndarray,
    profile: ScannerProfile,
    patient: dict[str, str],
    uid_seed: str,
    study_date: str,
) -> Dataset:
    """A complete CR image object around ``pixels`` (stored values)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.StudyDate = ds.SeriesDate = study_date
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Manufacturer = profile.manufacturer
    ds.InstitutionName = f"{profile.manufacturer.split()[0]} General Hospital"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8 if profile.bits_stored == 8 else 16
    ds.BitsStored, ds.HighBit = profile.bits_stored, profile.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = profile.rescale_slope, profile.rescale_intercept
    ds.RescaleType = "US"
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = pixels.tobytes()
    return ds
