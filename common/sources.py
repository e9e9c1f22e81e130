"""Where a site's data comes from: a folder of images, or one shard of an npz file.

Sources are small frozen descriptions (picklable, so the Simulation Engine can
hand them to its workers); ``load`` reads the data at the site.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from fedscan.common.data import SiteData, load_npz_shard, load_site
from fedscan.common.decode_pool import PoolSettings
from fedscan.common.dicom import DecodeOptions
from fedscan.common.errors import DataError
from fedscan.common.labels import LabelSpec


class SiteSource(Protocol):
    name: str

    def load(self, size: int, *, masks: bool = False) -> SiteData: ...


@dataclass(frozen=True)
class FolderSource:
    """A site folder: images (DICOM, PNG, JPEG; any depth) plus a labels CSV.

    ``cache_dir`` "" disables the decode-once cache; ``workers`` and
    ``decode_timeout_s`` set the decoding processes and their per-file limit.
    """

    name: str
    site_dir: str
    labels: LabelSpec = field(default_factory=LabelSpec)
    frames: str = "middle"
    cache_dir: str = ""
    workers: int = 2
    decode_timeout_s: float = 60.0
    val_fraction: float = 0.25
    seed: int = 0

    def load(self, size: int, *, masks: bool = False) -> SiteData:
        return load_site(Path(self.site_dir), size=size, labels=self.labels,
                         decode=DecodeOptions(frames=self.frames),
                         pool=PoolSettings(workers=self.workers, timeout_s=self.decode_timeout_s),
                         cache_dir=self.cache_dir, val_fraction=self.val_fraction, seed=self.seed, masks=masks)


@dataclass(frozen=True)
class NpzShardSource:
    """Site ``site`` of ``sites`` after partitioning an npz's train and val splits."""

    name: str
    path: str
    site: int
    sites: int
    partition: str = "iid"
    seed: int = 0

    def load(self, size: int, *, masks: bool = False) -> SiteData:
        if masks:
            raise DataError("An npz site has no masks; segmentation needs a site folder whose labels CSV "
                            "names a mask per image.")
        return load_npz_shard(Path(self.path), site=self.site, sites=self.sites,
                              partition=self.partition, seed=self.seed, size=size)


_KINDS = {"folder": FolderSource, "npz": NpzShardSource}


def sources_to_json(sources: tuple[SiteSource, ...]) -> str:
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
