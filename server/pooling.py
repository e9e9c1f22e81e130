"""Pooled validation metrics of a round: every site's predictions count, none is shared.

Each site's evaluation carries either its validation score histogram (classification) or three
overlap counts (segmentation). :class:`RoundPool` moves them out of the site's metrics — so Flower's
metric averaging and the run log never see 3 000 numbers per site — checks them, and at the end of
the round sums them: the pooled AUC, its interval, the Youden threshold and the metrics at it, or
Dice and IoU of the pooled masks; for a multiclass or multilabel run (``scheme``) the per-class
evidence (``common/metrics/classwise.py``) summed into per-class and macro figures; for a label
map (segmentation with K structures) the K × (TP, FP, FN) counts summed into per-structure Dice and
IoU, whose means are the round's Dice and IoU. A malformed histogram or count is a refusal of that
site's evaluation.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fedscan.common import protocol
from fedscan.common.errors import ErrorCode
from fedscan.common.metrics.calibration import calibrated_ece, ece_floor, recalibration
from fedscan.common.metrics.classwise import ClassEvidence, pooled_class_metrics
from fedscan.common.metrics.confusion import MEAN_DICE, MEAN_IOU, LabelOverlaps
from fedscan.common.metrics.histogram import ScoreHistogram, operating_threshold, pooled_metrics
from fedscan.common.metrics.segmentation import OverlapCounts, pooled_overlap
from fedscan.common.tasks import MULTILABEL, SEGMENTATION, LabelScheme


@dataclass
class RoundPool:
    """One round's histograms and overlap counts, by site."""

    histograms: dict[str, ScoreHistogram] = field(default_factory=dict)
    overlaps: dict[str, OverlapCounts] = field(default_factory=dict)
    scheme: LabelScheme | None = None  # multiclass / multilabel / label map: the run's classes
    label_overlaps: dict[str, LabelOverlaps] = field(default_factory=dict)
    evidence: dict[str, ClassEvidence] = field(default_factory=dict)
    class_thresholds: dict[str, float] = field(default_factory=dict)  # multilabel, pooled Youden
    operating_point: str = "youden"  # how a binary run's threshold is chosen (run config)

    def take(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        """Move ``site``'s histogram or counts out of ``metrics``; the problem when they are
        malformed (then nothing of the site's stays in the pool)."""
        problem = self._take(site, metrics)
        if problem is not None:
            for found in (self.overlaps, self.label_overlaps, self.evidence, self.histograms):
                found.pop(site, None)
        return problem

    def _take(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        counts = {key: metrics.pop(key) for key in protocol.COUNT_KEYS if key in metrics}
        if counts:
            try:
                self.overlaps[site] = OverlapCounts.from_metrics(counts)
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
        problem = self._take_label_overlaps(site, metrics) or self._take_evidence(site, metrics)
        if problem is not None:
            return problem
        lists = {key: metrics.pop(key) for key in protocol.HISTOGRAM_KEYS if key in metrics}
        if lists:
            try:
                self.histograms[site] = ScoreHistogram.from_lists(lists)
            except (KeyError, ValueError) as error:
                return f"{ErrorCode.MALFORMED_HISTOGRAM}: {error}"
        return None

    def _take_label_overlaps(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        flat = metrics.pop(protocol.LABEL_OVERLAPS, None)
        labels = self.scheme.structures if self.scheme is not None else 0
        if flat is None and not labels:
            return None
        try:
            if flat is None or len(flat) != 3 * labels:
                raise ValueError(f"a label map of {labels} structures needs {3 * labels} counts")
            self.label_overlaps[site] = LabelOverlaps.from_array(
                [flat[3 * k : 3 * k + 3] for k in range(labels)]
            )
        except (ValueError, TypeError) as error:
            return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
        return None

    def _take_evidence(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        keys = (*protocol.CLASS_HISTOGRAM_KEYS, protocol.CONFUSION_MATRIX)
        lists = {key: metrics.pop(key) for key in keys if key in metrics}
        binary = self.scheme is None or self.scheme.kind == SEGMENTATION
        if not lists and binary:
            return None
        if binary or self.scheme is None:
            return f"{ErrorCode.MALFORMED_HISTOGRAM}: per-class histograms in a binary run"
        try:
            self.evidence[site] = ClassEvidence.from_lists(self.scheme, lists)
        except (KeyError, ValueError, TypeError) as error:
            return f"{ErrorCode.MALFORMED_HISTOGRAM}: {error}"
        return None

    def _close_evidence(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The per-class pooled figures and the histograms document of the round's evidence."""
        evidence, self.evidence = self.evidence, {}
        first, *rest = evidence.values()
        total = sum(rest, first)
        pooled = pooled_class_metrics(total)
        if self.scheme is not None and self.scheme.kind == MULTILABEL:
            self.class_thresholds = {
                name: float(detail[protocol.THRESHOLD])
                for name, detail in pooled["classes"].items()
            }
        document = {
            "classes": list(total.histograms.classes),
            "thresholds": self.class_thresholds,
            "pooled": total.to_lists(),
            "sites": {name: found.to_lists() for name, found in sorted(evidence.items())},
        }
        return pooled, document

    def _with_structures(self, pooled: dict[str, Any]) -> dict[str, Any]:
        """The foreground figures (any structure) kept under ``foreground-*``; the round's Dice and
        IoU are the means over structures, each structure's own beside them."""
        assert self.scheme is not None  # label overlaps are taken for a label map only
        found, self.label_overlaps = self.label_overlaps, {}
        first, *rest = found.values()
        per_label = sum(rest, first).metrics(self.scheme.classes)
        return {
            **pooled,
            "foreground-dice": pooled[protocol.DICE],
            "foreground-iou": pooled[protocol.IOU],
            protocol.DICE: per_label[MEAN_DICE],
            protocol.IOU: per_label[MEAN_IOU],
            **per_label,
        }

    def close(
        self, images: int
    ) -> tuple[dict[str, Any] | None, float | None, dict[str, Any] | None]:
        """(the round's pooled metrics, the new operating threshold, the histograms document), each
        None when the round had nothing to pool; the pool is empty afterwards."""
        if self.evidence:
            per_class, classes_document = self._close_evidence()
            return per_class, None, classes_document
        overlaps, histograms = self.overlaps, self.histograms
        self.overlaps, self.histograms = {}, {}
        pooled = (
            pooled_overlap(sum(overlaps.values(), OverlapCounts()), images) if overlaps else None
        )
        if pooled is not None and self.label_overlaps:
            pooled = self._with_structures(pooled)
        if not histograms:
            return pooled, None, None
        figures, threshold, document = self._close_histograms(histograms)
        return figures, threshold, document

    def _close_histograms(
        self, histograms: dict[str, ScoreHistogram]
    ) -> tuple[dict[str, Any], float, dict[str, Any]]:
        """The pooled figures, the stored threshold (the run's rule) and the histograms document
        with the Platt map of the summed histogram."""
        first, *rest = histograms.values()
        total = sum(rest, first)
        threshold = operating_threshold(total, self.operating_point)
        calibration = recalibration(total)
        document = {
            "threshold": threshold,
            "calibration": calibration.to_json(),
            "pooled": total.to_lists(),
            "sites": {name: hist.to_lists() for name, hist in sorted(histograms.items())},
        }
        # In-sample: the map is fitted on these very histograms (bench/shift.py measures it on
        # held-out sites); the floor says what ECE this many images allow.
        figures = {
            **pooled_metrics(total, threshold),
            "ece-calibrated": calibrated_ece(total, calibration),
            "ece-floor": ece_floor(total, calibration),
        }
        return figures, threshold, document
