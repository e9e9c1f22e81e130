"""The forms one model's evaluation can leave a site in (:mod:`fedscan.client.metric_release`
decides which): its DP release for each kind of evaluation, with the site's figures computed from
the noisy values; the form the ledger keeps of it, to send it again unchanged; the exact coarse
form (``metrics = "coarse"``); and "withheld".

Invariant: every figure of a DP release is computed from its noisy values (post-processing); the
stored form rebuilds exactly the release that was sent.
"""

from __future__ import annotations

from typing import Any

from fedscan.common import protocol
from fedscan.common.metrics.classwise import ClassEvidence, site_scalars
from fedscan.common.metrics.confusion import LabelOverlaps
from fedscan.common.metrics.histogram import ScoreHistogram, pooled_metrics
from fedscan.common.metrics.private import NoisyEvaluation, coarsen
from fedscan.common.metrics.private_tasks import (
    NoisyClassEvidence,
    NoisyLabelOverlaps,
    NoisyOverlap,
    coarse_evidence,
)
from fedscan.common.metrics.segmentation import OverlapCounts

Scored = tuple[dict[str, Any], Any]  # (the figures, what backs them: a histogram, counts, …)


def releasable(scored: Scored) -> bool:
    metrics, found = scored
    segmentation = found is None and protocol.SEG_INTERSECTION in metrics
    return isinstance(found, (ScoreHistogram, ClassEvidence, LabelOverlaps)) or segmentation


def noisy(
    scored: Scored, noise: float, models: int, spent: float, *, threshold: float, pixels: int
) -> Scored:
    """One model's release and the site's figures computed from it (post-processing):
    ``threshold``: the run's, for a binary model's figures; ``pixels``: per validation image, the
    unit of a segmentation's counts; ``spent``: the run's metric ε with this release."""
    metrics, found = scored
    if isinstance(found, ScoreHistogram):
        binary = NoisyEvaluation.release(found, noise_multiplier=noise, models=models)
        figures = {**binary.site_metrics(threshold), **binary.scalars()}
        return {**figures, protocol.METRICS_EPSILON: spent}, binary
    if isinstance(found, ClassEvidence):
        classes = NoisyClassEvidence.release(found, noise_multiplier=noise, models=models)
        figures = {**site_scalars(classes.evidence()), protocol.NUM_EXAMPLES: classes.images()}
        return _with_noise(figures, classes.noise_std, spent), classes
    images = int(metrics[protocol.NUM_EXAMPLES])
    if isinstance(found, LabelOverlaps):
        labels = NoisyLabelOverlaps.release(
            found, images, pixels=pixels, noise_multiplier=noise, models=models
        )
        figures = {**labels.site_figures(), protocol.NUM_EXAMPLES: labels.image_count()}
        return _with_noise(figures, labels.noise_std, spent), labels
    counts = OverlapCounts.from_metrics(metrics)
    overlap = NoisyOverlap.release(
        counts, images, pixels=pixels, noise_multiplier=noise, models=models
    )
    pooled = overlap.overlap()
    figures = {protocol.DICE: pooled.dice, protocol.IOU: pooled.iou}
    return _with_noise(
        {**figures, protocol.NUM_EXAMPLES: overlap.images()}, overlap.noise_std, spent
    ), overlap


def _with_noise(figures: dict[str, Any], std: float, spent: float) -> dict[str, Any]:
    return {**figures, protocol.DP_NOISE_STD: std, protocol.METRICS_EPSILON: spent}


def stored_form(metrics: dict[str, Any], released: Any) -> dict[str, Any]:
    """What the ledger keeps of one model's release: enough to send it again unchanged."""
    form: dict[str, Any] = {"metrics": metrics, "lists": released.to_lists()}
    if isinstance(released, NoisyClassEvidence):
        form["classes"] = list(released.classes)
    return form


def from_stored(form: dict[str, Any]) -> Scored:
    metrics, lists = dict(form["metrics"]), form["lists"]
    std = float(metrics[protocol.DP_NOISE_STD])
    if protocol.DP_SEG_COUNTS in lists:
        return metrics, NoisyOverlap.from_lists(lists, std)
    if protocol.DP_LABEL_OVERLAPS in lists:
        structures = (len(lists[protocol.DP_LABEL_OVERLAPS]) - 1) // 3
        return metrics, NoisyLabelOverlaps.from_lists(lists, std, structures)
    if "classes" in form:
        multiclass = protocol.DP_CONFUSION_MATRIX in lists
        return metrics, NoisyClassEvidence.from_lists(
            tuple(form["classes"]), lists, std, multiclass
        )
    return metrics, NoisyEvaluation.from_metrics({**lists, **metrics})


def coarse_form(scored: Scored, threshold: float) -> Scored:
    """The exact coarse counts, and the site's figures recomputed from them (what was released
    is all the figures say)."""
    metrics, found = scored
    if isinstance(found, ScoreHistogram):
        coarse = coarsen(found)
        figures = pooled_metrics(coarse, threshold)
        shown = (*protocol.CLASSIFICATION_METRICS, protocol.PRECISION)
        return {**metrics, **{k: figures[k] for k in shown if k in figures}}, coarse
    if isinstance(found, ClassEvidence):
        evidence = coarse_evidence(found)
        return {**metrics, **site_scalars(evidence)}, evidence
    return scored


def withheld(results: dict[str, Scored]) -> dict[str, Scored]:
    return {
        name: ({protocol.METRICS_WITHHELD: 1, protocol.NUM_EXAMPLES: 0}, None) for name in results
    }
