"""The run report: ``report.html`` (one self-contained file, images inline, opens offline) and
``model_card.md``, rebuilt from the run directory alone (``fedscan report RUN_DIR``).

A run that completed with gaps says so at the top of both: its state and one line per gap (the
phase, the sites it missed and why, the sites whose DP release went into a lost result)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedscan.common.errors import DataError
from fedscan.common.files import atomic_write_bytes
from fedscan.common.metrics.crosssite import CrossSiteMatrix
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.server import report_classes, report_html, site_audits
from fedscan.server import report_segmentation as segmentation
from fedscan.server.model_card import model_card, summary
from fedscan.server.rundir import (
    CONFIG_FILE,
    FINAL_MODEL,
    HISTOGRAMS_FILE,
    INIT_WEIGHTS_FILE,
    MATRIX_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    REPORT_FILE,
    STATUS_FILE,
    RunDirectory,
)


def _read(run_dir: Path) -> dict[str, Any]:
    directory = RunDirectory(run_dir, run_dir.name)
    if not directory.file(METRICS_FILE).is_file():
        raise DataError(f"{run_dir} holds no {METRICS_FILE}: is it a fedscan run directory?")
    history = [
        line for line in directory.read_metrics() if "aggregated" in line
    ]  # rounds that completed
    return {
        "history": history,
        "config": directory.read_json(CONFIG_FILE),
        "status": directory.read_json(STATUS_FILE),
        "histograms": directory.read_json(HISTOGRAMS_FILE),
        "final": directory.read_json(f"{FINAL_MODEL}.json"),
        "run_id": run_dir.name,
        "matrix": directory.read_json(MATRIX_FILE),
        "init": directory.read_json(INIT_WEIGHTS_FILE),
        "site_audits": site_audits.attached(run_dir),
    }


def build_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.html and model_card.md into ``run_dir``; return their paths."""
    from fedscan.common.metrics import plots  # matplotlib only when a report is made

    run_dir = Path(run_dir)
    run = _read(run_dir)
    if not run["history"]:
        raise DataError("The run completed no round; there is nothing to report.")
    delta = float(run["config"].get("privacy", {}).get("delta", math.nan))
    metric, name = ("dice", "Dice") if segmentation.is_segmentation(run) else ("auc", "AUC")
    figures = {
        f"{name} per round": plots.per_round(
            run["history"],
            metric=metric,
            title=f"Validation {name} per round",
            pooled=any("pooled" in line for line in run["history"]),
        ),
        "Loss per round": plots.per_round(
            run["history"], metric="loss", title="Validation loss per round", pooled=False
        ),
        "ε per site": plots.epsilon_per_round(run["history"], delta),
    }
    if report_classes.is_per_class(run):
        figures.update(report_classes.figures(run))
    elif run["histograms"]:
        pooled = ScoreHistogram.from_lists(run["histograms"]["pooled"])
        sites = {
            name: ScoreHistogram.from_lists(h) for name, h in run["histograms"]["sites"].items()
        }
        figures["ROC"] = plots.roc(pooled, sites, float(run["histograms"]["threshold"]))
        figures["Reliability"] = plots.reliability(pooled)
    if run["matrix"]:
        matrix = CrossSiteMatrix.from_json(run["matrix"])
        figures["Cross-site AUC"] = plots.cross_site_heatmap(
            list(matrix.models),
            list(matrix.sites),
            matrix.values("auc"),
            [matrix.pooled.get(model, {}).get("auc") for model in matrix.models],
        )
    card = model_card(run)
    report, card_path = run_dir / REPORT_FILE, run_dir / MODEL_CARD_FILE
    atomic_write_bytes(report, report_html.render(run, figures, card, summary(run)).encode())
    atomic_write_bytes(card_path, card.encode())
    return report, card_path


def rebuild_events(run_dir: Path) -> Path:
    """TensorBoard event files for every completed round of the run (replacing earlier ones)."""
    from fedscan.server.tensorboard import rebuild

    return rebuild(Path(run_dir), _read(Path(run_dir))["history"])
