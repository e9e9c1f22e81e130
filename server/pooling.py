"""Pooled validation metrics of a round: every site's predictions count, none is shared.

Each site's evaluation carries either its validation score histogram (classification) or three
overlap counts (segmentation). :class:`RoundPool` moves them out of the site's metrics — so Flower's
metric averaging and the run log never see 3 000 numbers per site — checks them, and at the end of
the round sums them: the pooled AUC, its interval, the Youden threshold and the metrics at it, or
Dice and IoU of the pooled masks. A malformed histogram or count is a refusal of that site's
evaluation.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fedscan.common import protocol
from fedscan.common.errors import ErrorCode
from fedscan.common.metrics.histogram import ScoreHistogram, pooled_metrics, youden_threshold
from fedscan.common.metrics.segmentation import OverlapCounts, pooled_overlap


@dataclass
class RoundPool:
    """One round's histograms and overlap counts, by site."""

    histograms: dict[str, ScoreHistogram] = field(default_factory=dict)
    overlaps: dict[str, OverlapCounts] = field(default_factory=dict)

    def take(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        """Move ``site``'s histogram or counts out of ``metrics``; the problem when they are
        malformed."""
        counts = {key: metrics.pop(key) for key in protocol.COUNT_KEYS if key in metrics}
        if counts:
            try:
                self.overlaps[site] = OverlapCounts.from_metrics(counts)
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
        lists = {key: metrics.pop(key) for key in protocol.HISTOGRAM_KEYS if key in metrics}
        if lists:
            try:
                self.histograms[site] = ScoreHistogram.from_lists(lists)
            except (KeyError, ValueError) as error:
                return f"{ErrorCode.MALFORMED_HISTOGRAM}: {error}"
        return None

    def close(
        self, images: int
    ) -> tuple[dict[str, float] | None, float | None, dict[str, Any] | None]:
        """(the round's pooled metrics, the new operating threshold, the histograms document), each
        None when the round had nothing to pool; the pool is empty afterwards."""
        overlaps, histograms = self.overlaps, self.histograms
        self.overlaps, self.histograms = {}, {}
        pooled = (
            pooled_overlap(sum(overlaps.values(), OverlapCounts()), images) if overlaps else None
        )
        if not histograms:
            return pooled, None, None
        total = sum(histograms.values(), ScoreHistogram.empty(next(iter(histograms.values())).bins))
        threshold = youden_threshold(total)
        document = {
            "threshold": threshold,
            "pooled": total.to_lists(),
            "sites": {name: hist.to_lists() for name, hist in sorted(histograms.items())},
        }
        return pooled_metrics(total, threshold), threshold, document
