"""Synthetic hospitals: chest-radiograph-like DICOM phantoms, one folder per site.

Each site imitates a different scanner (:mod:`~fedscan.common.data.synth_scanner`) and a different
case mix. Every image gets a mask (``masks/IMnnnnn.png``, named in the CSV's ``mask`` column) and a
row in ``labels.csv``; what they hold depends on the task (:class:`SynthConfig`):

* ``classification`` (the default): positives carry soft opacities in the lungs; ``label`` is 0/1
  and the mask is 255 inside the opacities (all 0 for negatives). ``segmentation`` with one label
  writes exactly these files.
* ``multiclass``: each image is one of :data:`MULTICLASS_CLASSES`, in a ``finding`` column.
* ``multilabel``: any subset of :data:`FINDINGS`, one 0/1 column per finding plus a ``findings``
  column (present names, ``|``-separated, empty for none).
* ``segmentation`` with ``labels = K`` ≥ 2: the mask is a label map, 0 background and ``i + 1``
  where :data:`STRUCTURES` ``[i]`` is drawn, for the first K structures.

Non-binary phantoms always draw a heart (:mod:`~fedscan.common.data.synth_phantom`); their
multi-class and multi-label masks are 255 inside any present finding. ``label`` is always "any
finding present", so binary readers work on every task. Output is byte-for-byte deterministic for
a seed, and the default task's bytes are those this generator has always written.
"""

from __future__ import annotations

import csv
import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedscan.common import defaults
from fedscan.common.data.synth_findings import (
    MULTICLASS_CLASSES,
    TASKS,
    Case,
    csv_header,
    csv_row,
    finding_prevalences,
    site_cases,
    task_error,
)
from fedscan.common.data.synth_phantom import (
    FINDING_DENSITY,
    FINDINGS,
    STRUCTURES,
    draw_layout,
    finding_mask,
    label_map,
    render_case,
    render_layout,
    render_phantom,
)
from fedscan.common.data.synth_scanner import (
    CR_IMAGE_STORAGE,
    ScannerProfile,
    build_dataset,
    fake_patient,
    patient_number,
    site_profile,
    to_stored,
)
from fedscan.common.errors import ConfigError
from fedscan.common.ingest.labels import DEFAULT_LABELS_FILE as LABELS_FILE

__all__ = [
    "CR_IMAGE_STORAGE",
    "FINDINGS",
    "FINDING_DENSITY",
    "LABELS_FILE",
    "MASKS_FOLDER",
    "MULTICLASS_CLASSES",
    "STRUCTURES",
    "TASKS",
    "ScannerProfile",
    "SynthConfig",
    "build_dataset",
    "generate_site",
    "generate_sites",
    "patient_number",
    "render_case",
    "render_phantom",
    "site_profile",
]

log = logging.getLogger(__name__)

MASKS_FOLDER = "masks"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction."""

    sites: int = defaults.SITES
    images_per_site: int = defaults.IMAGES_PER_SITE
    seed: int = defaults.SEED
    task: str = "classification"  # one of TASKS
    labels: int = 1  # segmentation: structures in the label map (the first K of STRUCTURES)

    def __post_init__(self) -> None:
        if self.sites < 1:
            raise ConfigError("--sites must be at least 1.")
        if self.images_per_site < 10:
            raise ConfigError(
                "--images-per-site must be at least 10 (each site needs both classes)."
            )
        error = task_error(self.task, self.labels)
        if error:
            raise ConfigError(error)

    @property
    def binary(self) -> bool:
        """Whether this writes the original binary sites (a one-label segmentation does too)."""
        return self.task == "classification" or (self.task == "segmentation" and self.labels == 1)


def generate_site(out_dir: Path, site_index: int, config: SynthConfig) -> int:
    """Write one site's DICOM files, masks and ``labels.csv``; return the count with a finding."""
    profile = site_profile(site_index, config.seed)
    rng = np.random.default_rng([config.seed, site_index])
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.binary:
        return _binary_site(out_dir, site_index, config, profile, rng)
    return _findings_site(out_dir, site_index, config, profile, rng)


def _binary_site(
    out_dir: Path,
    site_index: int,
    config: SynthConfig,
    profile: ScannerProfile,
    rng: np.random.Generator,
) -> int:
    # The original generator's draw order (labels, then per case: phantom, noise, date, patient).
    labels = _balanced_labels(rng, config.images_per_site, profile.prevalence)
    rows = []
    for case, label in enumerate(labels):
        density, finding = render_case(rng, profile.rows, profile.columns, bool(label))
        name, uid = _write_image(out_dir, site_index, case, density, profile, rng, config.seed)
        mask = f"{MASKS_FOLDER}/IM{case:05d}.png"
        _write_mask(out_dir / mask, finding.astype(np.uint8) * 255)
        rows.append([name, uid, int(label), mask])
    _write_csv(out_dir, csv_header("classification"), rows)
    return int(sum(labels))


def _findings_site(
    out_dir: Path,
    site_index: int,
    config: SynthConfig,
    profile: ScannerProfile,
    rng: np.random.Generator,
) -> int:
    prevalences = finding_prevalences(site_index, config.seed)
    cases = site_cases(config.task, config.labels, rng, config.images_per_site, prevalences)
    rows = []
    for index, case in enumerate(cases):
        density, masks = render_layout(draw_layout(rng, case), profile.rows, profile.columns)
        name, uid = _write_image(out_dir, site_index, index, density, profile, rng, config.seed)
        mask = f"{MASKS_FOLDER}/IM{index:05d}.png"
        _write_mask(out_dir / mask, _mask_values(config, masks, case))
        rows.append(csv_row(config.task, name, uid, case, mask))
    _write_csv(out_dir, csv_header(config.task), rows)
    return sum(1 for case in cases if case)


def _mask_values(config: SynthConfig, masks: Mapping[str, np.ndarray], case: Case) -> np.ndarray:
    shape = masks["heart"].shape  # every non-binary phantom has a heart
    if config.task == "segmentation":
        return label_map(masks, STRUCTURES[: config.labels], shape)
    return finding_mask(masks, case).astype(np.uint8) * 255


def _write_image(
    out_dir: Path,
    site_index: int,
    case: int,
    density: np.ndarray,
    profile: ScannerProfile,
    rng: np.random.Generator,
    seed: int,
) -> tuple[str, str]:
    """Store one phantom as ``IMnnnnn.dcm``; return its file name and SOP Instance UID."""
    pixels = to_stored(density, profile, rng)
    study_date = (
        datetime.date(2024, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
    ).strftime("%Y%m%d")
    ds = build_dataset(
        pixels,
        profile,
        fake_patient(rng, site_index, case),
        f"{seed}-{site_index}-{case}",
        study_date,
    )
    name = f"IM{case:05d}.dcm"
    ds.save_as(out_dir / name, enforce_file_format=True)
    return name, str(ds.SOPInstanceUID)


def _write_mask(path: Path, values: np.ndarray) -> None:
    """An 8-bit greyscale PNG of integer values (255 inside a finding, or 0..K labels): what
    annotation tools export."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path, format="PNG")


def _write_csv(out_dir: Path, header: list[str], rows: Sequence[Sequence[object]]) -> None:
    with open(out_dir / LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


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
            "Generated site %s: %s images, %s with a finding",
            index,
            config.images_per_site,
            positives,
        )
        site_dirs.append(site_dir)
    return site_dirs
