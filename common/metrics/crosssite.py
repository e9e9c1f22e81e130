"""The cross-site validation matrix: every model evaluated at every site.

At the end of a run each site fine-tunes the final global model on its own
data — one more DP release, planned into its budget from the start — and the
coordinator then asks every site to evaluate the global model and every
site's local model. The result is a models × sites table of metrics, plus a
pooled column per model (summed score histograms, as for the rounds). It
shows how well a model travels: a local model that wins at home and loses
elsewhere is overfit to its hospital. For a multiclass or multilabel run each cell's ``auc`` is
the site's macro AUC, with every class's AUC under ``classes``, and the pooled column sums the
per-class evidence. The models' names are the records of the cross-site message
(:data:`~fedscan.common.protocol.GLOBAL_MODEL`, :func:`~fedscan.common.protocol.local_model_name`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedscan.common import protocol
from fedscan.common.metrics.classwise import ClassEvidence, pooled_class_metrics
from fedscan.common.metrics.histogram import ScoreHistogram, pooled_metrics
from fedscan.common.metrics.private import NoisyEvaluation, coarsen, pooled_noisy


@dataclass(frozen=True)
class SiteEvaluation:
    """One site's metrics and score histogram (per-class evidence) for one model."""

    metrics: Mapping[str, float]
    histogram: ScoreHistogram | ClassEvidence | NoisyEvaluation | None  # None: withheld

    def cell(self) -> dict[str, Any]:
        """The matrix cell: the site's metrics; per class also its macro AUC as ``auc`` and each
        class's AUC."""
        if not isinstance(self.histogram, ClassEvidence):
            return dict(self.metrics)
        found = pooled_class_metrics(self.histogram)  # of this one site's evidence
        classes = {name: detail[protocol.AUC] for name, detail in found["classes"].items()}
        return {**self.metrics, protocol.AUC: found[protocol.AUC], "classes": classes}


def _pooled(evaluations: list[Any], threshold: float) -> dict[str, Any] | None:
    """A model's pooled column: its summed histograms (or per-class evidence, or sites' DP
    releases) over the sites; None when every site withheld its figures."""
    classes = [found for found in evaluations if isinstance(found, ClassEvidence)]
    if classes:
        return pooled_class_metrics(sum(classes[1:], classes[0]))
    if any(isinstance(found, NoisyEvaluation) for found in evaluations):
        released = [f for f in evaluations if isinstance(f, (NoisyEvaluation, ScoreHistogram))]
        return pooled_noisy(released, threshold)[0]
    histograms = [found for found in evaluations if isinstance(found, ScoreHistogram)]
    if not histograms:
        return None
    if len({hist.bins for hist in histograms}) > 1:  # a site under metrics = "coarse"
        histograms = [coarsen(hist) for hist in histograms]
    return pooled_metrics(sum(histograms[1:], histograms[0]), threshold)


@dataclass(frozen=True)
class CrossSiteMatrix:
    """Metrics of each model (rows) at each site (columns), and pooled over sites per model."""

    models: tuple[str, ...]
    sites: tuple[str, ...]
    cells: Mapping[str, Mapping[str, Mapping[str, Any]]]  # model → site → metrics
    pooled: Mapping[str, Mapping[str, Any]]  # model → pooled metrics
    threshold: float
    notes: tuple[str, ...] = field(default=())
    epsilon: Mapping[str, float] = field(
        default_factory=dict
    )  # site → ε for the run, fine-tune included

    def values(self, metric: str) -> list[list[float | None]]:
        """``metric`` as a models × sites grid; None where a site did not evaluate a model."""
        return [
            [self.cells.get(model, {}).get(site, {}).get(metric) for site in self.sites]
            for model in self.models
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "sites": list(self.sites),
            "threshold": self.threshold,
            "cells": {m: dict(row) for m, row in self.cells.items()},
            "pooled": {m: dict(p) for m, p in self.pooled.items()},
            "notes": list(self.notes),
            "epsilon": dict(self.epsilon),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> CrossSiteMatrix:
        return cls(
            tuple(document["models"]),
            tuple(document["sites"]),
            document["cells"],
            document["pooled"],
            float(document["threshold"]),
            tuple(document.get("notes", ())),
            document.get("epsilon", {}),
        )


def metric_epsilon(document: Mapping[str, Any]) -> dict[str, float]:
    """Each site's metric ε for the run once its cross-site release is counted (the largest any
    of its cells states), from a matrix's JSON: the run's last word on the validation images."""
    found: dict[str, float] = {}
    for row in document.get("cells", {}).values():
        for site, cell in row.items():
            if isinstance(cell.get(protocol.METRICS_EPSILON), (int, float)):
                found[site] = max(found.get(site, 0.0), float(cell[protocol.METRICS_EPSILON]))
    return found


def build_matrix(
    results: Mapping[str, Mapping[str, SiteEvaluation]],
    *,
    models: list[str],
    threshold: float,
    notes: list[str] | None = None,
    epsilon: Mapping[str, float] | None = None,
) -> CrossSiteMatrix:
    """The matrix from ``results[site][model]``; pooled metrics sum each model's histograms over
    sites."""
    sites = sorted(results)
    cells: dict[str, dict[str, dict[str, Any]]] = {model: {} for model in models}
    pooled: dict[str, dict[str, Any]] = {}
    for model in models:
        histograms = []
        for site in sites:
            evaluation = results[site].get(model)
            if evaluation is not None:
                cells[model][site] = evaluation.cell()
                histograms.append(evaluation.histogram)
        found = _pooled(histograms, threshold) if histograms else None
        if found is not None:
            pooled[model] = found
    return CrossSiteMatrix(
        tuple(models),
        tuple(sites),
        cells,
        pooled,
        threshold,
        tuple(notes or ()),
        dict(epsilon or {}),
    )
