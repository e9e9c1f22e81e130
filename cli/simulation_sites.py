"""What ``fedscan simulate`` federates: the data choice, the sites made of it, and their record.

A :class:`Simulation` is validated before any engine starts, and is what ``simulation.json`` holds:
``--resume`` rebuilds exactly the same sites from it (synthetic sites and npz partitions follow the
run's seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.common import defaults
from fedscan.common.addresses import split_address
from fedscan.common.data.partition import parse_partition
from fedscan.common.data.sources import FolderSource, NpzShardSource
from fedscan.common.data.synth import FINDINGS, MULTICLASS_CLASSES, SynthConfig, generate_sites
from fedscan.common.data.synth_findings import CLASS_COLUMN
from fedscan.common.data.synth_phantom import STRUCTURES
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest.labels import DEFAULT_LABELS_FILE, LabelSpec
from fedscan.common.metrics.private import METRIC_POLICIES
from fedscan.common.tasks import BINARY, MULTICLASS, MULTILABEL, SEGMENTATION

SYNTH_CLASSES = {MULTICLASS: MULTICLASS_CLASSES, MULTILABEL: FINDINGS}  # simulate's classes
SYNTHETIC_CT = "synthetic-ct"
CT_MODELS = {BINARY: "cnn3d", SEGMENTATION: "unet3d"}  # synthetic-ct's models by task


@dataclass(frozen=True)
class DataChoice:
    """``synthetic``, ``synthetic-ct`` (CT series for the 3-D models), ``npz:PATH``, or
    ``dicom:DIR[,DIR...]``.

    For ``dicom``, each DIR is one site folder with its ``labels.csv``; a single
    DIR without ``labels.csv`` is a folder of such site folders.
    """

    kind: str
    paths: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DataChoice:
        if text in ("synthetic", SYNTHETIC_CT):
            return cls(text)
        kind, _, listed = text.partition(":")
        if kind not in ("npz", "dicom") or not listed:
            raise ConfigError(
                f"Unknown --data {text!r}; use synthetic, synthetic-ct, npz:PATH or "
                "dicom:DIR[,DIR...]."
            )
        paths = tuple(
            Path(item).expanduser().resolve() for item in listed.split(",") if item.strip()
        )
        for path in paths:
            if not path.exists():
                raise DataError(f"--data path does not exist: {path}")
        if kind == "npz" and len(paths) != 1:
            raise ConfigError("--data npz:PATH takes one file; the sites are its partitions.")
        return cls(kind, paths)

    @property
    def path(self) -> Path | None:
        return self.paths[0] if self.paths else None

    def site_folders(self) -> list[Path]:
        """The site folders of a ``dicom`` choice, each checked for its labels CSV."""
        if len(self.paths) == 1 and not (self.paths[0] / DEFAULT_LABELS_FILE).is_file():
            return sorted(p for p in self.paths[0].iterdir() if (p / DEFAULT_LABELS_FILE).is_file())
        for folder in self.paths:
            if not (folder / DEFAULT_LABELS_FILE).is_file():
                raise DataError(
                    f"{folder} has no {DEFAULT_LABELS_FILE}; every site folder needs one "
                    "(check it with `fedscan data check`)."
                )
        return list(self.paths)

    def describe(self) -> str:
        return self.kind if not self.paths else f"{self.kind}:{','.join(map(str, self.paths))}"


@dataclass(frozen=True)
class Simulation:
    """How a simulated federation's sites are made (``simulation.json``)."""

    choice: DataChoice
    sites: int
    partition: str = "iid"
    images_per_site: int = defaults.IMAGES_PER_SITE
    device: str = "auto"
    ray_address: str = ""  # an existing Ray cluster's HOST:PORT ("" = a private local one)
    site_cpus: int = 1  # Ray CPUs of one simulated site's worker (Flower takes whole CPUs)
    site_gpus: float | None = None  # None: one GPU shared by the sites when the device is cuda
    site_metrics: str = defaults.METRICS_POLICY  # the simulated sites' [privacy] metrics

    @property
    def synthetic(self) -> bool:
        return self.choice.kind in ("synthetic", SYNTHETIC_CT)

    def __post_init__(self) -> None:
        if self.sites < 2:
            raise ConfigError("--sites must be at least 2: a federation needs two hospitals.")
        parse_partition(self.partition)
        if self.choice.kind != "npz" and self.partition != "iid":
            raise ConfigError(
                "--partition applies to --data npz:PATH only; DICOM sites are already "
                "partitioned by hospital."
            )
        check_resources(self.ray_address, self.site_cpus, self.site_gpus)
        if self.site_metrics not in METRIC_POLICIES:
            raise ConfigError(
                f"--site-metrics {self.site_metrics!r}: use one of {', '.join(METRIC_POLICIES)}."
            )

    def to_json(self) -> dict[str, Any]:
        synthetic = self.synthetic
        return {
            "data": self.choice.describe(),
            "sites": self.sites,
            "partition": self.partition,
            "device": self.device,
            "images_per_site": self.images_per_site if synthetic else None,
            "ray_address": self.ray_address,
            "site_cpus": self.site_cpus,
            "site_gpus": self.site_gpus,
            "site_metrics": self.site_metrics,
        }

    @classmethod
    def from_json(cls, described: dict[str, Any]) -> Simulation:
        return cls(
            DataChoice.parse(str(described["data"])),
            int(described["sites"]),
            str(described["partition"]),
            int(described.get("images_per_site") or defaults.IMAGES_PER_SITE),
            str(described["device"]),
            str(described.get("ray_address") or ""),
            int(described.get("site_cpus") or 1),
            described.get("site_gpus"),
            str(described.get("site_metrics") or defaults.METRICS_POLICY),
        )


def check_resources(ray_address: str, cpus: int, gpus: float | None) -> None:
    """A cluster address Ray's driver can join, and resources a worker can be given."""
    if ray_address:
        try:
            split_address(ray_address)
        except ConfigError:
            raise ConfigError(
                f"--ray-address {ray_address!r} must be the head node's HOST:PORT (the GCS "
                "address `ray start --head` prints, e.g. 10.0.0.5:6379)."
            ) from None
    if cpus < 1:
        raise ConfigError("--site-cpus must be at least 1 (the whole CPUs Ray reserves per site).")
    if gpus is not None and not 0 <= gpus <= 1:
        raise ConfigError("--site-gpus must be in [0, 1] (the share of a GPU per site).")


def count_sites(choice: DataChoice, requested: int | None) -> int:
    """Sites in the federation: the folders listed for ``dicom``, else ``--sites``."""
    if choice.kind != "dicom" or len(choice.paths) == 1 and requested is not None:
        return defaults.SITES if requested is None else requested
    found = len(choice.site_folders())
    if requested is not None and requested != found:
        raise ConfigError(
            f"--sites {requested} disagrees with the {found} site folders given in --data."
        )
    return found


def synthetic_classes(choice: DataChoice, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with the synthetic hospitals' class list when a multiclass or multilabel
    simulation on them names none (a run on real data must declare its own); on synthetic CT the
    3-D model of the task when none is named."""
    task = settings.get("task")
    if choice.kind == SYNTHETIC_CT:
        return _ct_settings(settings)
    if choice.kind != "synthetic" or settings.get("classes") or task not in SYNTH_CLASSES:
        return dict(settings)
    return {**settings, "classes": ",".join(SYNTH_CLASSES[task])}


def _ct_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    task = settings.get("task") or BINARY
    if task not in CT_MODELS or settings.get("classes"):
        raise ConfigError(
            "The synthetic CT hospitals have one finding, nodules: use --task classification "
            "(a nodule or not) or segmentation (its 3-D mask), without --classes."
        )
    return {"model": CT_MODELS[task], **settings}


def plan_sources(
    simulation: Simulation,
    *,
    seed: int,
    workdir: Path,
    cache_dir: str = "",
    task: str = BINARY,
    classes: tuple[str, ...] = (),
) -> tuple[FolderSource | NpzShardSource, ...]:
    """Each site's data source, checked up front (before Ray starts)."""
    choice, sites = simulation.choice, simulation.sites
    if choice.kind == "npz":
        return _npz_sources(choice, sites, simulation.partition, seed)
    if choice.kind == "dicom":
        site_dirs = choice.site_folders()
        if len(site_dirs) < sites:
            raise DataError(
                f"--data {choice.describe()} holds {len(site_dirs)} site folders with "
                f"{DEFAULT_LABELS_FILE}; --sites asks for {sites}."
            )
    elif choice.kind == SYNTHETIC_CT:
        from fedscan.common.data.synth_ct import CTConfig, generate_ct_sites

        ct = CTConfig(sites, simulation.images_per_site, seed)
        site_dirs = generate_ct_sites(workdir / "synthetic-ct", ct)
    else:
        config = _synth_config(simulation, seed, task, classes)
        site_dirs = generate_sites(workdir / "synthetic", config)
    names = _unique_names([p.name for p in site_dirs[:sites]])
    # The synthetic hospitals name each image's class in their own column (multiclass).
    synthetic = choice.kind == "synthetic" and task == MULTICLASS
    labels = LabelSpec(label_column=CLASS_COLUMN) if synthetic else LabelSpec()
    return tuple(
        FolderSource(name, str(p), labels, seed=seed, cache_dir=cache_dir)
        for name, p in zip(names, site_dirs[:sites], strict=True)
    )


def _synth_config(
    simulation: Simulation, seed: int, task: str, classes: tuple[str, ...]
) -> SynthConfig:
    """The synthetic hospitals for ``task``: a binary or binary-mask run trains on today's
    phantoms, the class kinds on findings, a label map on the first K synthetic structures."""
    if task == SEGMENTATION and classes:
        if classes != STRUCTURES[: len(classes)]:
            raise ConfigError(
                f"The synthetic hospitals' label maps hold {', '.join(STRUCTURES)} as 1, 2, ...; "
                f"classes must be the first K of them in that order (got {', '.join(classes)}), "
                f"e.g. --classes {','.join(STRUCTURES[:3])}."
            )
        return SynthConfig(
            simulation.sites, simulation.images_per_site, seed, task=task, labels=len(classes)
        )
    kind = task if task in SYNTH_CLASSES else BINARY
    return SynthConfig(simulation.sites, simulation.images_per_site, seed, task=kind)


def _npz_sources(
    choice: DataChoice, sites: int, partition: str, seed: int
) -> tuple[NpzShardSource, ...]:
    from fedscan.common.data.npz import load_npz_split

    (path,) = choice.paths  # DataChoice.parse allows one npz file
    for split in ("train", "val"):
        load_npz_split(path, split)  # fail fast on an unreadable file
    return tuple(
        NpzShardSource(f"site-{i}", str(path), i, sites, partition, seed) for i in range(sites)
    )


def _unique_names(names: list[str]) -> list[str]:
    """Folder names as site names; repeated ones (…/a/site, …/b/site) get a suffix."""
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]
