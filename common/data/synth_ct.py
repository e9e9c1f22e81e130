"""Synthetic chest-CT hospitals: one DICOM series per study, nodules as the learnable finding.

Anatomy is drawn in patient millimetres (LPS), so sites that sample it at different spacings see
the same bodies: air, a body ellipse of soft tissue with a fat rim, two lungs, a heart and a spine,
in HU; positives carry one or two solid nodules (spheres of 10–16 mm radius, 60–160 HU, in a
lung). Every series has
a 3-D nodule mask and a row in ``labels.csv`` keyed by the series' folder (``file``), with its
``series_instance_uid`` and ``patient_id``. Sites differ as hospitals do
(:data:`CT_PROFILES`): matrix, pixel spacing, slice spacing, noise, slice order and file naming;
site 1 writes shuffled file names in reversed order and NIfTI masks, site 2 one enhanced
multi-frame object per series. With ``broken`` (the default) site 0 also holds three damaged
series (a missing slice, a localizer mixed in, a duplicated position) for the rejections.
Stored values are HU + 1024 (RescaleIntercept −1024, slope 1). Deterministic for a seed.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedscan.common.data.synth_ct_files import SeriesGeometry, write_masks, write_series
from fedscan.common.errors import ConfigError
from fedscan.common.ingest.labels import DEFAULT_LABELS_FILE

log = logging.getLogger(__name__)
MASKS_FOLDER = "masks"
BROKEN = ("missing-slice", "localizer", "duplicate-position")


@dataclass(frozen=True)
class CTProfile:
    """How one synthetic hospital's CT scanner samples and stores a chest."""

    manufacturer: str
    side: int  # rows = columns
    pixel_mm: float
    slice_mm: float
    noise_hu: float
    prevalence: float
    layout: str  # "descending" (head first, the common export), "shuffled-reversed", "enhanced"


CT_PROFILES = (
    CTProfile("Acme CT", 96, 3.4, 5.0, 15.0, 0.5, "descending"),
    CTProfile("Borealis CT", 112, 2.9, 3.0, 25.0, 0.4, "shuffled-reversed"),
    CTProfile("Cygnus CT", 128, 2.6, 4.0, 35.0, 0.55, "enhanced"),
)
_Z_EXTENT_MM = 160.0  # the scanned range: the lungs and a margin


@dataclass(frozen=True)
class CTConfig:
    sites: int = 3
    volumes_per_site: int = 100
    seed: int = 0
    broken: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.sites <= len(CT_PROFILES) * 4:
            raise ConfigError(f"--sites must be 1..{len(CT_PROFILES) * 4} for synthetic CT.")
        if self.volumes_per_site < 6:
            raise ConfigError("--volumes-per-site must be at least 6 (both classes per site).")


def ct_profile(site: int) -> CTProfile:
    base = CT_PROFILES[site % len(CT_PROFILES)]
    if site < len(CT_PROFILES):
        return base
    return CTProfile(
        f"{base.manufacturer} {site}",
        base.side,
        base.pixel_mm * 1.05,
        base.slice_mm,
        base.noise_hu,
        base.prevalence,
        base.layout,
    )


def render_chest(
    geometry: SeriesGeometry, rng: np.random.Generator, nodules: int
) -> tuple[np.ndarray, np.ndarray]:
    """HU (slices × rows × columns, ascending z) and the nodule mask of one patient."""
    z, y, x = geometry.grid()
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-10.0, 10.0)
    hu = np.full(z.shape, -1000.0)
    body = (x / (160 * scale)) ** 2 + (y / (110 * scale)) ** 2
    hu[body <= 1.0] = -100.0  # fat rim
    hu[(x / (145 * scale)) ** 2 + (y / (95 * scale)) ** 2 <= 1.0] = 40.0
    lungs = []
    for side in (-1.0, 1.0):
        centre = (side * 68 * scale, -5.0, 10.0 + shift)
        semi = (52 * scale, 72 * scale, 95 * scale)
        lung = _ellipsoid(x, y, z, centre, semi)
        hu[lung <= 1.0] = -850.0
        lungs.append((centre, semi))
    hu[_ellipsoid(x, y, z, (22.0, -35.0, -40.0 + shift), (48, 42, 40)) <= 1.0] = 40.0  # heart
    hu[((x / 18) ** 2 + ((y - 80 * scale) / 18) ** 2) <= 1.0] = 500.0  # spine
    mask = np.zeros(z.shape, np.uint8)
    for _ in range(nodules):
        centre, radius = _nodule_site(rng, lungs)
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2
        hu[inside] = rng.uniform(60.0, 160.0)  # solid, denser than the 40 HU soft tissue
        mask[inside] = 1
    for _ in range(int(rng.integers(2, 6))):  # vessels cut across: bright specks in every lung
        centre, _ = _nodule_site(rng, lungs)
        speck = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= 9.0
        hu[speck & (hu < -500)] = -300.0
    return hu, mask


def _ellipsoid(x, y, z, centre, semi) -> np.ndarray:
    return sum(((v - c) / s) ** 2 for v, c, s in zip((x, y, z), centre, semi, strict=True))


def _nodule_site(
    rng: np.random.Generator, lungs: Sequence[tuple[tuple[float, ...], tuple[float, ...]]]
) -> tuple[tuple[float, float, float], float]:
    centre, semi = lungs[int(rng.integers(len(lungs)))]
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    reach = rng.uniform(0.0, 0.6)
    point = tuple(float(c + d * s * reach) for c, d, s in zip(centre, direction, semi, strict=True))
    return (point[0], point[1], point[2]), float(rng.uniform(10.0, 16.0))


def generate_ct_site(out_dir: Path, site: int, config: CTConfig) -> int:
    """Write one site's series, masks and labels.csv; return the number of positives."""
    profile = ct_profile(site)
    rng = np.random.default_rng([config.seed, site, 31])
    out_dir.mkdir(parents=True, exist_ok=True)
    count = config.volumes_per_site
    positives = min(max(2, round(count * profile.prevalence)), count - 2)
    labels = rng.permutation(np.r_[np.ones(positives, int), np.zeros(count - positives, int)])
    rows = []
    for case, label in enumerate(labels):
        rows.append(_write_case(out_dir, site, case, int(label), profile, rng, config.seed))
    if config.broken and site == 0:
        for kind in BROKEN:
            rows.append(_write_case(out_dir, site, len(rows), 0, profile, rng, config.seed, kind))
    with open(out_dir / DEFAULT_LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "series_instance_uid", "patient_id", "label", "mask"])
        writer.writerows(rows)
    return positives


def _write_case(
    out_dir: Path,
    site: int,
    case: int,
    label: int,
    profile: CTProfile,
    rng: np.random.Generator,
    seed: int,
    broken: str = "",
) -> list[object]:
    slices = round(_Z_EXTENT_MM / profile.slice_mm)
    geometry = SeriesGeometry(profile.side, slices, profile.pixel_mm, profile.slice_mm)
    hu, mask = render_chest(geometry, rng, nodules=int(rng.integers(1, 3)) if label else 0)
    hu = hu + rng.normal(0.0, profile.noise_hu, hu.shape)
    folder = f"CT{case:04d}"
    uids = write_series(
        out_dir / folder,
        hu,
        geometry,
        profile,
        rng,
        uid_seed=f"{seed}-{site}-{case}",
        site=site,
        case=case,
        broken=broken,
    )
    mask_name = (
        f"{MASKS_FOLDER}/{folder}{'.nii.gz' if profile.layout == 'shuffled-reversed' else '.npy'}"
    )
    write_masks(out_dir / mask_name, mask, geometry)
    return [folder, uids.series, uids.patient, label, mask_name]


def generate_ct_sites(out_dir: Path, config: CTConfig) -> list[Path]:
    """``config.sites`` CT site folders ``site-0 ... site-{N-1}`` under ``out_dir``."""
    folders = []
    for site in range(config.sites):
        folder = Path(out_dir) / f"site-{site}"
        positives = generate_ct_site(folder, site, config)
        log.info(
            "Generated CT site %s: %s series, %s with nodules",
            site,
            config.volumes_per_site,
            positives,
        )
        folders.append(folder)
    return folders
