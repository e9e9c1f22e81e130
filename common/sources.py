"""Where a site's data comes from: a DICOM folder, or one shard of an npz file.

Sources are small frozen descriptions (picklable, so the Simulation Engine can
hand them to its workers); ``load`` reads the data at the site.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from fedscan.common.data import SiteData, load_dicom_site, load_npz_shard
from fedscan.common.errors import DataError


class SiteSource(Protocol):
    name: str

    def load(self, size: int) -> SiteData: ...


@dataclass(frozen=True)
class DicomSource:
    """A folder of DICOM files with ``labels.csv`` (columns file, label)."""

    name: str
    site_dir: str
    val_fraction: float = 0.25
    seed: int = 0

    def load(self, size: int) -> SiteData:
        return load_dicom_site(Path(self.site_dir), size=size, val_fraction=self.val_fraction,
                               seed=self.seed)


@dataclass(frozen=True)
class NpzShardSource:
    """Site ``site`` of ``sites`` after partitioning an npz's train and val splits."""

    name: str
    path: str
    site: int
    sites: int
    partition: str = "iid"
    seed: int = 0

    def load(self, size: int) -> SiteData:
        return load_npz_shard(Path(self.path), site=self.site, sites=self.sites,
                              partition=self.partition, seed=self.seed, size=size)


_KINDS = {"dicom": DicomSource, "npz": NpzShardSource}


def sources_to_json(sources: tuple[SiteSource, ...]) -> str:
    """Encode simulated sites for the run config (flat values only, so one JSON string)."""
    kinds = {cls: kind for kind, cls in _KINDS.items()}
    return json.dumps([{"kind": kinds[type(source)], **asdict(source)} for source in sources])


def sources_from_json(text: str) -> tuple[SiteSource, ...]:
    try:
        return tuple(_KINDS[entry.pop("kind")](**entry) for entry in json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError("The simulation's site list is malformed.") from exc
