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

import math
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fedscan.common import protocol
from fedscan.common.errors import ErrorCode
from fedscan.common.metrics.calibration import calibrated_ece, ece_floor, recalibration
from fedscan.common.metrics.classwise import ClassEvidence, pooled_class_metrics
from fedscan.common.metrics.confusion import MEAN_DICE, MEAN_IOU, LabelOverlaps
from fedscan.common.metrics.histogram import ScoreHistogram, operating_threshold, pooled_metrics
from fedscan.common.metrics.private import NoisyEvaluation, coarsen, exact_release, pooled_noisy
from fedscan.common.metrics.private_tasks import (
    NoisyClassEvidence,
    NoisyLabelOverlaps,
    NoisyOverlap,
    coarse_evidence,
    pooled_noisy_evidence,
)
from fedscan.common.metrics.segmentation import OverlapCounts, dice_interval, pooled_overlap
from fedscan.common.tasks import MULTICLASS, MULTILABEL, SEGMENTATION, LabelScheme


@dataclass
class RoundPool:
    """One round's histograms and overlap counts, by site."""

    histograms: dict[str, ScoreHistogram] = field(default_factory=dict)
    noisy: dict[str, NoisyEvaluation] = field(default_factory=dict)  # sites' DP metric releases
    overlaps: dict[str, OverlapCounts] = field(default_factory=dict)
    scheme: LabelScheme | None = None  # multiclass / multilabel / label map: the run's classes
    label_overlaps: dict[str, LabelOverlaps] = field(default_factory=dict)
    evidence: dict[str, ClassEvidence] = field(default_factory=dict)
    class_thresholds: dict[str, float] = field(default_factory=dict)  # multilabel, pooled Youden
    class_noise: dict[str, float] = field(default_factory=dict)  # per-class DP releases' noise
    operating_point: str = "youden"  # how a binary run's threshold is chosen (run config)
    pixels: int = 0  # pixels (voxels) per validation image: the model's input
    # Sites' DP overlap releases as sent: (I, P, T) unclamped and their noise std, in pixels.
    overlap_noise: dict[str, tuple[tuple[float, float, float], float]] = field(default_factory=dict)

    def take(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        """Move ``site``'s histogram or counts out of ``metrics``; the problem when they are
        malformed (then nothing of the site's stays in the pool)."""
        problem = self._take(site, metrics)
        if problem is not None:
            for found in (self.overlaps, self.label_overlaps, self.evidence, self.histograms):
                found.pop(site, None)
            self.class_noise.pop(site, None)
            self.noisy.pop(site, None)
            self.overlap_noise.pop(site, None)
        return problem

    def _take(self, site: str, metrics: MutableMapping[str, Any]) -> str | None:
        if metrics.get(protocol.METRICS_WITHHELD):
            return None  # the site's metric policy: an answer without figures, nothing to pool
        std = metrics.get(protocol.DP_NOISE_STD)
        if protocol.DP_SEG_COUNTS in metrics:  # a site's DP release of its overlap counts
            try:
                noisy = NoisyOverlap.from_lists(metrics, float(std or 0.0))
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
            del metrics[protocol.DP_SEG_COUNTS]
            self.overlaps[site] = noisy.overlap()
            intersection, predicted, truth = (float(v) for v in noisy.counts[:3])
            raw = (intersection, predicted, truth)
            self.overlap_noise[site] = (raw, noisy.noise_std * self.pixels)
        counts = {key: metrics.pop(key) for key in protocol.COUNT_KEYS if key in metrics}
        if counts:
            try:
                self.overlaps[site] = OverlapCounts.from_metrics(counts)
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
        problem = self._take_label_overlaps(site, metrics) or self._take_evidence(site, metrics)
        if problem is not None:
            return problem
        if protocol.DP_HIST_POSITIVES in metrics:
            released = {
                key: metrics.pop(key)
                for key in (*protocol.DP_HISTOGRAM_KEYS, *protocol.DP_SCALARS)
                if key in metrics
            }
            try:
                self.noisy[site] = NoisyEvaluation.from_metrics(released)
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_HISTOGRAM}: {error}"
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
        if protocol.DP_LABEL_OVERLAPS in metrics:  # a site's DP release of its label-map counts
            std = float(metrics.get(protocol.DP_NOISE_STD) or 0.0)
            lists = {protocol.DP_LABEL_OVERLAPS: metrics.pop(protocol.DP_LABEL_OVERLAPS)}
            try:
                noisy = NoisyLabelOverlaps.from_lists(lists, std, labels)
            except (KeyError, ValueError, TypeError) as error:
                return f"{ErrorCode.MALFORMED_OVERLAP_COUNTS}: {error}"
            self.label_overlaps[site] = noisy.overlaps()
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
        keys = (*protocol.CLASS_HISTOGRAM_KEYS, protocol.CONFUSION_MATRIX, *protocol.DP_CLASS_KEYS)
        lists = {key: metrics.pop(key) for key in keys if key in metrics}
        binary = self.scheme is None or self.scheme.kind == SEGMENTATION
        if not lists and binary:
            return None
        if binary or self.scheme is None:
            return f"{ErrorCode.MALFORMED_HISTOGRAM}: per-class histograms in a binary run"
        try:
            std = metrics.get(protocol.DP_NOISE_STD)
            self.evidence[site] = _evidence(self.scheme, lists, std)
            if protocol.DP_CLASS_HIST_POSITIVES in lists:
                self.class_noise[site] = float(std or 0.0)
        except (KeyError, ValueError, TypeError) as error:
            return f"{ErrorCode.MALFORMED_HISTOGRAM}: {error}"
        return None

    def _close_evidence(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The per-class pooled figures and the histograms document of the round's evidence."""
        evidence, self.evidence = self.evidence, {}
        if len({found.histograms.bins for found in evidence.values()}) > 1:
            evidence = {site: coarse_evidence(found) for site, found in evidence.items()}
        first, *rest = evidence.values()
        noise_std = math.hypot(*self.class_noise.values())  # summed in quadrature
        self.class_noise = {}
        total, corrections = pooled_noisy_evidence(sum(rest, first), noise_std)
        pooled = pooled_class_metrics(total)
        for name, corrected in corrections.items():  # intervals widened, counts as released
            pooled["classes"][name].update(corrected)
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
        foreground = {  # absent from DP releases, which carry the structures' counts only
            f"foreground-{key}": pooled[key]
            for key in (protocol.DICE, protocol.IOU)
            if key in pooled
        }
        return {
            **pooled,
            **foreground,
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
        overlaps, histograms, noisy = self.overlaps, self.histograms, self.noisy
        self.overlaps, self.histograms, self.noisy = {}, {}, {}
        pooled = self._pooled_overlap(overlaps, images) if overlaps else None
        if self.label_overlaps:
            pooled = self._with_structures(pooled or {"n": float(images)})
        if noisy:
            return self._close_noisy(noisy, histograms)
        if not histograms:
            return pooled, None, None
        figures, threshold, document = self._close_histograms(_same_bins(histograms))
        return figures, threshold, document

    def _pooled_overlap(self, overlaps: dict[str, OverlapCounts], images: int) -> dict[str, Any]:
        """Dice and IoU of the summed counts. Where sites sent DP releases, their sums as sent
        (clamped once, after summing: on demo-like counts whose true Dice is 0.82, clamping each
        site's sums first gave 0.22 on average, summing first 0.32) and the Dice's 95 % interval
        for their noise, which for small structures can be all of [0, 1] (docs/privacy.md)."""
        released, self.overlap_noise = self.overlap_noise, {}
        noisy = {site: found for site, found in released.items() if site in overlaps}
        if not noisy:
            return pooled_overlap(sum(overlaps.values(), OverlapCounts()), images)
        rows = [noisy[site][0] if site in noisy else c.as_tuple() for site, c in overlaps.items()]
        intersection, predicted, truth = (sum(column) for column in zip(*rows, strict=True))
        pooled = pooled_overlap(OverlapCounts.from_noisy(intersection, predicted, truth), images)
        spread = math.sqrt(sum(std**2 for _, std in noisy.values()))
        pooled["dice-ci-low"], pooled["dice-ci-high"] = dice_interval(
            (intersection, predicted, truth), spread
        )
        return pooled

    def _close_noisy(
        self, noisy: dict[str, NoisyEvaluation], exact: dict[str, ScoreHistogram]
    ) -> tuple[dict[str, Any], float, dict[str, Any]]:
        """Sites' DP releases summed with the exact (coarse) histograms of the others: the figures
        of the sum, its AUC interval widened for the noise."""
        found = {**noisy, **{site: exact_release(hist) for site, hist in exact.items()}}
        figures, total, threshold = pooled_noisy(list(found.values()), self.operating_point)
        plotted = total.plotted()  # counts ≥ 0 for the Platt fit (post-processing)
        calibration = recalibration(plotted)
        figures["ece-calibrated"] = calibrated_ece(plotted, calibration)
        figures["ece-floor"] = ece_floor(plotted, calibration)
        document = {
            "threshold": threshold,
            "calibration": calibration.to_json(),
            "pooled": plotted.to_lists(),
            "noise-std": total.noise_std,
            "sites": {name: found[name].plotted().to_lists() for name in sorted(found)},
        }
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


def _same_bins(histograms: dict[str, ScoreHistogram]) -> dict[str, ScoreHistogram]:
    """Fine histograms coarsened when any site sent coarse ones (``metrics = "coarse"``): sums
    need one binning, and coarse bins are unions of fine ones."""
    if len({hist.bins for hist in histograms.values()}) == 1:
        return histograms
    return {site: coarsen(hist) for site, hist in histograms.items()}


def _evidence(scheme: LabelScheme, lists: dict[str, Any], noise_std: Any) -> ClassEvidence:
    """A site's per-class evidence: exact, or its DP release as evidence (post-processing)."""
    if protocol.DP_CLASS_HIST_POSITIVES not in lists:
        return ClassEvidence.from_lists(scheme, lists)
    multiclass = scheme.kind == MULTICLASS
    noisy = NoisyClassEvidence.from_lists(scheme.classes, lists, float(noise_std), multiclass)
    return noisy.evidence()
