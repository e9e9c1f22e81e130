"""What volume ingestion found: one record per series, one per file left out of every series.

:meth:`SeriesReport.summary` holds counts and geometry summaries only (no path, UID or patient
identifier; it may be shown to the coordinator's operator); :meth:`SeriesReport.to_json` adds the
per-series and per-file lists with local names and stays on the site's disk.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fedscan.common.ingest.rejections import Reason


@dataclass(frozen=True)
class SeriesRecord:
    """The fate of one series; ``name`` is its folder (``#n`` when a folder holds several)."""

    name: str
    status: str
    reason: str | None = None
    message: str = ""
    slices: int = 0
    files: int = 0
    spacing: tuple[float, float, float] | None = None  # canonical z, y, x (mm)
    orientation: str = ""
    label: int | None = None
    from_cache: bool = False
    facts: dict[str, str] = field(default_factory=dict)  # Modality, Manufacturer

    def reject(self, reason: Reason, message: str) -> SeriesRecord:
        return replace(self, status="rejected", reason=reason.value, message=message)


@dataclass(frozen=True)
class FileRejection:
    """A file that joined no series (not DICOM, unreadable, no geometry, a duplicate)."""

    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class SeriesReport:
    series: list[SeriesRecord]
    files: int
    file_rejections: list[FileRejection]
    label_rows: int
    labels_without_series: int
    cache: dict[str, int] | None
    elapsed_s: float

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.series if s.status == "accepted")

    @property
    def rejected(self) -> int:
        return len(self.series) - self.accepted

    def rejected_by_reason(self) -> dict[str, int]:
        """Series rejected by code, plus the files that joined no series."""
        codes = [s.reason for s in self.series if s.reason]
        codes += [f.reason for f in self.file_rejections]
        return dict(sorted(Counter(codes).items()))

    def summary(self) -> dict[str, Any]:
        """Counts and geometry only: no path, UID or patient identifier."""
        accepted = [s for s in self.series if s.status == "accepted"]
        slices = sorted(s.slices for s in accepted)
        return {
            "files": self.files,
            "series": len(self.series),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": dict(
                sorted(Counter(s.reason for s in self.series if s.reason).items())
            ),
            "files_outside_series": dict(
                sorted(Counter(f.reason for f in self.file_rejections).items())
            ),
            "samples_by_label": dict(sorted(Counter(str(s.label) for s in accepted).items())),
            "slices_per_series": _spread(slices),
            "spacing_mm": _count(_spacing_text(s.spacing) for s in accepted),
            "orientation": _count(s.orientation for s in accepted),
            "modality": _count(s.facts.get("Modality") or "unknown" for s in accepted),
            "manufacturer": _count(s.facts.get("Manufacturer") or "unknown" for s in accepted),
            "label_rows": self.label_rows,
            "labels_without_series": self.labels_without_series,
            "cache": self.cache,
            "elapsed_s": self.elapsed_s,
        }

    def to_json(self) -> str:
        """The local report: the summary, every series and every file left out (local names)."""
        document = {
            "summary": self.summary(),
            "series": [asdict(s) for s in self.series],
            "files_outside_series": [asdict(f) for f in self.file_rejections],
        }
        return json.dumps(document, indent=2, default=str)


def _spread(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    return {"min": values[0], "median": values[len(values) // 2], "max": values[-1]}


def _spacing_text(spacing: tuple[float, float, float] | None) -> str:
    return "×".join(f"{v:.2f}" for v in spacing) if spacing else "unknown"


def _count(values: Any) -> dict[str, int]:
    return dict(Counter(values).most_common())
