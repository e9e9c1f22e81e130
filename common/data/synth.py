"""Synthetic hospitals: chest-radiograph-like DICOM phantoms, one folder per site.

Each site imitates a different scanner (bit depth, rescale, photometric
interpretation, size, noise) and a different case mix. Positives carry soft
"opacities" in the lungs, a learnable finding; every image also gets a mask of
its findings (``masks/IMnnnnn.png``, named in the CSV's ``mask`` column, empty for
negatives) for the segmentation task. Headers hold realistic but fake patient
data so privacy tests have identifiers to look for. Output is byte-for-byte
deterministic for a seed.
"""

from __future__ import annotations

import csv
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from fedscan.common import defaults
from fedscan.common.errors import ConfigError
from fedscan.common.ingest.labels import DEFAULT_LABELS_FILE as LABELS_FILE

log = logging.getLogger(__name__)

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
FINDING_DENSITY = 0.1  # an opacity's added density where its mask ends (peaks are 0.25–0.4)
MASKS_FOLDER = "masks"
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


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction."""

    sites: int = defaults.SITES
    images_per_site: int = defaults.IMAGES_PER_SITE
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        if self.sites < 1:
            raise ConfigError("--sites must be at least 1.")
        if self.images_per_site < 10:
            raise ConfigError(
                "--images-per-site must be at least 10 (each site needs both classes)."
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


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_phantom(rng: np.random.Generator, rows: int, cols: int, positive: bool) -> np.ndarray:
    """A chest-radiograph-like density map in [0, 1] (1 = dense, bright on display)."""
    return render_case(rng, rows, cols, positive)[0]


def render_case(
    rng: np.random.Generator, rows: int, cols: int, positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(density map, finding mask): the mask marks where the opacities add at least
    :data:`FINDING_DENSITY` (a visible change; all False for a negative)."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    yy, xx = yy / rows, xx / cols
    jitter = rng.normal(0.0, 0.015, size=4)
    image = np.full((rows, cols), 0.05, dtype=np.float32)
    image[_ellipse(yy, xx, 0.52 + jitter[0], 0.5, 0.46, 0.44)] = 0.55  # soft tissue
    lung_ry, lung_rx = 0.30 + jitter[1], 0.15 + jitter[2]
    lungs = [(0.48 + jitter[3], 0.31), (0.48 + jitter[3], 0.69)]
    for cy, cx in lungs:
        image[_ellipse(yy, xx, cy, cx, lung_ry, lung_rx)] = 0.18
    image[(np.abs(xx - 0.5) < 0.045) & (yy > 0.12)] = 0.85  # spine / mediastinum
    for rib in range(6):  # faint rib arcs
        arc = np.abs(yy - (0.25 + 0.08 * rib) - 0.06 * np.cos((xx - 0.5) * 6.0)) < 0.008
        image[arc] += 0.08
    finding = _opacities(rng, yy, xx, lungs, lung_ry, lung_rx) if positive else np.zeros_like(image)
    return np.clip(image + finding, 0.0, 1.0), finding >= FINDING_DENSITY


def _opacities(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    lungs: list[tuple[float, float]],
    lung_ry: float,
    lung_rx: float,
) -> np.ndarray:
    extra = np.zeros_like(yy)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = lungs[int(rng.integers(0, 2))]
        oy = cy + rng.uniform(-0.6, 0.6) * lung_ry
        ox = cx + rng.uniform(-0.5, 0.5) * lung_rx
        sigma = rng.uniform(0.04, 0.08)
        extra += rng.uniform(0.25, 0.4) * np.exp(
            -((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * sigma**2)
        )
    return extra


def _to_stored(
    density: np.ndarray, profile: ScannerProfile, rng: np.random.Generator
) -> np.ndarray:
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


def _fake_patient(rng: np.random.Generator, site_index: int, case: int) -> dict[str, str]:
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


def generate_site(out_dir: Path, site_index: int, config: SynthConfig) -> int:
    """Write one site's DICOM files and ``labels.csv``; return the positive count."""
    profile = site_profile(site_index, config.seed)
    rng = np.random.default_rng([config.seed, site_index])
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = _balanced_labels(rng, config.images_per_site, profile.prevalence)
    rows = []
    for case, label in enumerate(labels):
        density, finding = render_case(rng, profile.rows, profile.columns, bool(label))
        pixels = _to_stored(density, profile, rng)
        study_date = (
            datetime.date(2024, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
        ).strftime("%Y%m%d")
        ds = build_dataset(
            pixels,
            profile,
            _fake_patient(rng, site_index, case),
            f"{config.seed}-{site_index}-{case}",
            study_date,
        )
        name = f"IM{case:05d}.dcm"
        ds.save_as(out_dir / name, enforce_file_format=True)
        mask = f"{MASKS_FOLDER}/IM{case:05d}.png"
        _write_mask(out_dir / mask, finding)
        rows.append((name, str(ds.SOPInstanceUID), int(label), mask))
    with open(out_dir / LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "sop_instance_uid", "label", "mask"])
        writer.writerows(rows)
    return int(sum(labels))


def _write_mask(path: Path, mask: np.ndarray) -> None:
    """An 8-bit PNG, 255 inside the finding: what annotation tools export."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


def _balanced_labels(rng: np.random.Generator, count: int, prevalence: float) -> np.ndarray:
    positives = min(max(2, int(round(count * prevalence))), count - 2)
    labels = np.zeros(count, dtype=np.int64)
    labels[:positives] = 1
    return rng.permutation(labels)


def generate_sites(out_dir: Path, config: SynthConfig) -> list[Path]:
    """Generate ``config.sites`` site folders ``site-0 ... site-{N-1}`` under ``out_dir``."""
    site_dirs = []
    for index in range(config.sites):
        site_dir = Path(out_dir) / f"site-{index}"
        positives = generate_site(site_dir, index, config)
        log.info(
            "Generated site %s: %s images, %s positive", index, config.images_per_site, positives
        )
        site_dirs.append(site_dir)
    return site_dirs
