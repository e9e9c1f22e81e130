"""Figures of a run, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: coordinators have no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedscan.common.metrics.histogram import ScoreHistogram, auc, reliability_curve, roc_curve  # noqa: E402


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _sites(history: list[dict[str, Any]], phase: str) -> list[str]:
    return sorted({name for line in history for name in line.get(phase, {})})


def per_round(history: list[dict[str, Any]], *, metric: str, title: str, pooled: bool) -> bytes:
    """``metric`` per round: per site (thin), the pooled value (bold) where available."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    rounds = [line["round"] for line in history]
    for site in _sites(history, "evaluate"):
        values = [line.get("evaluate", {}).get(site, {}).get(metric) for line in history]
        axis.plot(
            rounds,
            [np.nan if v is None else v for v in values],
            marker="o",
            lw=1,
            alpha=0.7,
            label=site,
        )
    source = "pooled" if pooled else "aggregated"
    overall = [(line.get(source) or {}).get(metric) for line in history]
    axis.plot(
        rounds,
        [np.nan if v is None else v for v in overall],
        marker="s",
        lw=2.5,
        color="black",
        label="pooled" if pooled else "example-weighted mean",
    )
    axis.set(xlabel="round", ylabel=metric, title=title)
    axis.set_xticks(rounds)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def epsilon_per_round(history: list[dict[str, Any]], delta: float) -> bytes:
    figure, axis = plt.subplots(figsize=(6, 3.6))
    rounds = [line["round"] for line in history]
    for site in _sites(history, "train"):
        values = [line.get("epsilon", {}).get(site) for line in history]
        axis.plot(rounds, [np.nan if v is None else v for v in values], marker="o", label=site)
    central = [line.get("central_epsilon") for line in history]
    if any(value is not None for value in central):
        axis.plot(
            rounds,
            [np.nan if v is None else v for v in central],
            ls="--",
            color="black",
            label="central",
        )
    axis.set(xlabel="round", ylabel="ε spent", title=f"Privacy spent per site (δ = {delta:g})")
    axis.set_xticks(rounds)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def roc(pooled: ScoreHistogram, sites: dict[str, ScoreHistogram], threshold: float) -> bytes:
    figure, axis = plt.subplots(figsize=(4.6, 4.4))
    for name, hist in sorted(sites.items()):
        fpr, tpr, _ = roc_curve(hist)
        axis.plot(fpr, tpr, lw=1, alpha=0.7, label=f"{name} (AUC {auc(hist):.3f})")
    fpr, tpr, thresholds = roc_curve(pooled)
    axis.plot(fpr, tpr, lw=2.5, color="black", label=f"pooled (AUC {auc(pooled):.3f})")
    at = int(np.argmin(np.abs(thresholds - threshold)))
    axis.scatter([fpr[at]], [tpr[at]], color="red", zorder=5, label=f"threshold {threshold:.3f}")
    axis.plot([0, 1], [0, 1], ls=":", color="grey")
    axis.set(xlabel="1 − specificity", ylabel="sensitivity", title="Final ROC (validation)")
    axis.legend(fontsize=7, loc="lower right")
    return _png(figure)


def reliability(pooled: ScoreHistogram) -> bytes:
    mean_score, observed, count = reliability_curve(pooled)
    figure, axis = plt.subplots(figsize=(4.6, 4.4))
    axis.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    filled = count > 0
    axis.plot(mean_score[filled], observed[filled], marker="o", color="black", label="pooled")
    for x, y, n in zip(mean_score[filled], observed[filled], count[filled], strict=True):
        axis.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axis.set(
        xlabel="mean predicted probability",
        ylabel="observed fraction positive",
        title="Reliability (validation, 10 bins)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axis.legend(fontsize=8)
    return _png(figure)


def cross_site_heatmap(
    models: list[str], sites: list[str], grid: list[list[float | None]], pooled: list[float | None]
) -> bytes:
    """AUC of each model (rows) at each site (columns), the pooled AUC as the last column."""
    values = np.array(
        [
            [np.nan if v is None else v for v in row] + [np.nan if p is None else p]
            for row, p in zip(grid, pooled, strict=True)
        ],
        dtype=float,
    )
    columns = [*sites, "pooled"]
    figure, axis = plt.subplots(figsize=(1.3 * len(columns) + 2.4, 0.55 * len(models) + 1.6))
    image = axis.imshow(values, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    axis.set_yticks(range(len(models)), models)
    axis.axvline(len(sites) - 0.5, color="white", lw=3)
    for (row, column), value in np.ndenumerate(values):
        text = "—" if np.isnan(value) else f"{value:.3f}"
        axis.text(
            column,
            row,
            text,
            ha="center",
            va="center",
            fontsize=8,
            color="black" if not np.isnan(value) and value > 0.8 else "white",
        )
    axis.set(title="Cross-site validation AUC (model × evaluating site)")
    figure.colorbar(image, ax=axis, fraction=0.04)
    return _png(figure)
