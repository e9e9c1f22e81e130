"""Where a site's data comes from: a folder of images, or one shard of an npz file.

Sources are small frozen descriptions (picklable, so the Simulation Engine can
hand them to its workers); ``load`` reads the data at the site. Describing a
source imports no torch: reading a site's configuration stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedscan.common import defaults
from fedscan.common.errors import DataError
from fedscan.common.ingest.cache import default_cache_dir
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.series.intensity import POLICY_HELP
from fedscan.common.settings import described, setting
from fedscan.common.tasks import LabelScheme

if TYPE_CHECKING:
    from fedscan.common.data.imageset import SiteData
    from fedscan.common.ingest.series.assemble import VolumeSettings
    from fedscan.common.ingest.series.resample import VolumeInput
    from fedscan.common.models.registry import ModelSpec


def volume_input(spec: ModelSpec) -> VolumeInput | None:
    """A 3-D model's input (depth × side × side voxels of its spacing); None for a 2-D model."""
    if not spec.volumetric:
        return None
    from fedscan.common.ingest.series.resample import VolumeInput

    return VolumeInput(spec.depth, spec.input_size, spec.voxel_mm)


class SiteSource(Protocol):
    """What a site's data is: a name, and how to load it at a model's input size."""

    @property
    def name(self) -> str: ...

    def load(
        self,
        size: int,
        *,
        masks: bool = False,
        scheme: LabelScheme | None = None,
        volume: VolumeInput | None = None,
    ) -> SiteData: ...


@dataclass(frozen=True)
class FolderSource:
    """A site folder: images (DICOM, PNG, JPEG; any depth) plus a labels CSV (site.toml ``[data]``).

    ``cache_dir`` "" disables the decode-once cache; ``workers`` and
    ``decode_timeout_s`` set the decoding processes and their per-file limit.
    """

    name: str
    site_dir: str = field(
        metadata=described(
            key="dir", path=True, help="The site's image folder (any depth; DICOM, PNG, JPEG)."
        )
    )
    labels: LabelSpec = field(default_factory=LabelSpec)
    frames: str = setting(
        defaults.FRAMES,
        help="Multi-frame files: middle (one sample, the middle frame) or all "
        "(every frame a sample).",
    )
    cache_dir: str = setting(
        "",
        path=True,
        read_default=default_cache_dir,
        default_text="$FEDSCAN_CACHE_DIR, else $XDG_CACHE_HOME/fedscan, else ~/.cache/fedscan",
        help="The decode-once cache: preprocessed images, named by content; it holds "
        "header identifiers, so it stays at the site.",
    )
    workers: int = setting(
        defaults.DECODE_WORKERS,
        key="decode-workers",
        help="Decoder processes (0: decode "
        "in the site's own process, without a time limit; for debugging).",
    )
    decode_timeout_s: float = setting(
        defaults.DECODE_TIMEOUT_S, help="Per-file decode time limit, seconds."
    )
    val_fraction: float = setting(
        defaults.VAL_FRACTION, help="Share of patients kept for validation, in [0, 1)."
    )
    intensity: str = setting(
        "auto",
        help="Volumes (3-D models): how modality values become [0, 1]: " + POLICY_HELP + ".",
    )
    min_slices: int = setting(
        8, help="Volumes: the fewest slices a series may have (fewer: SERIES_TOO_FEW_SLICES)."
    )
    seed: int = 0

    def __post_init__(self) -> None:
        # A typo in the intensity policy or min-slices fails when site.toml is read, not at the
        # first round of a run.
        from fedscan.common.errors import ConfigError
        from fedscan.common.ingest.series.geometry import SeriesLimits
        from fedscan.common.ingest.series.intensity import IntensityPolicy

        IntensityPolicy.parse(self.intensity)
        most = SeriesLimits().max_slices
        if not 2 <= self.min_slices <= most:
            raise ConfigError(f"[data] min-slices must be 2..{most}; got {self.min_slices}.")

    def load(
        self,
        size: int,
        *,
        masks: bool = False,
        scheme: LabelScheme | None = None,
        volume: VolumeInput | None = None,
    ) -> SiteData:
        from fedscan.common.data.site import load_site
        from fedscan.common.ingest import DecodeOptions, PoolSettings

        if volume is not None:
            return self._load_volumes(volume, masks=masks, scheme=scheme)
        return load_site(
            Path(self.site_dir),
            size=size,
            labels=self.labels,
            decode=DecodeOptions(frames=self.frames),
            pool=PoolSettings(workers=self.workers, timeout_s=self.decode_timeout_s),
            cache_dir=self.cache_dir,
            val_fraction=self.val_fraction,
            seed=self.seed,
            masks=masks,
            scheme=scheme,
        )

    def volume_settings(self, volume: VolumeInput) -> VolumeSettings:
        """How this site assembles series for a 3-D model's input."""
        from fedscan.common.ingest import PoolSettings
        from fedscan.common.ingest.series.assemble import VolumeSettings
        from fedscan.common.ingest.series.geometry import SeriesLimits

        return VolumeSettings(
            volume,
            intensity=self.intensity,
            limits=SeriesLimits(min_slices=self.min_slices),
            pool=PoolSettings(workers=self.workers, timeout_s=self.decode_timeout_s),
            cache_dir=self.cache_dir,
        )

    def _load_volumes(
        self, volume: VolumeInput, *, masks: bool, scheme: LabelScheme | None
    ) -> SiteData:
        from fedscan.common.data.site import load_volume_site

        return load_volume_site(
            Path(self.site_dir),
            self.volume_settings(volume),
            labels=self.labels,
            val_fraction=self.val_fraction,
            seed=self.seed,
            masks=masks,
            scheme=scheme,
        )


@dataclass(frozen=True)
class NpzShardSource:
    """Site ``site`` of ``sites`` after partitioning an npz's train and val splits."""

    name: str
    path: str
    site: int
    sites: int
    partition: str = "iid"
    seed: int = 0

    def load(
        self,
        size: int,
        *,
        masks: bool = False,
        scheme: LabelScheme | None = None,
        volume: VolumeInput | None = None,
    ) -> SiteData:
        if volume is not None:
            raise DataError(
                "An npz site holds 2-D images; a 3-D model trains on DICOM series (a site "
                "folder, or --data synthetic-ct)."
            )
        if masks:
            raise DataError(
                "An npz site has no masks; segmentation needs a site folder whose labels CSV "
                "names a mask per image."
            )
        from fedscan.common.data.npz import load_npz_shard

        return load_npz_shard(
            Path(self.path),
            site=self.site,
            sites=self.sites,
            partition=self.partition,
            seed=self.seed,
            size=size,
            scheme=scheme,
        )


_KINDS = {"folder": FolderSource, "npz": NpzShardSource}


def sources_to_json(sources: Sequence[FolderSource | NpzShardSource]) -> str:
    """Encode simulated sites for the run config (flat values only, so one JSON string)."""
    kinds = {cls: kind for kind, cls in _KINDS.items()}
    return json.dumps([{"kind": kinds[type(source)], **asdict(source)} for source in sources])


def sources_from_json(text: str) -> tuple[SiteSource, ...]:
    try:
        return tuple(_source_from_dict(entry) for entry in json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError("The simulation's site list is malformed.") from exc


def _source_from_dict(entry: dict) -> SiteSource:
    kind = _KINDS[entry.pop("kind")]
    if kind is FolderSource and isinstance(entry.get("labels"), dict):
        entry["labels"] = LabelSpec(**entry["labels"])
    return kind(**entry)
