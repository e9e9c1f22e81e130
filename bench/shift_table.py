"""The tables of ``bench/shift.py``: ranking, operating points and calibration under shift.

Each fold's threshold and calibration map come from its validation scores binned as the sites bin
them (a pooled :class:`ScoreHistogram`), exactly what the coordinator stores; the held-out figures
are then exact (rank AUC, counts at the threshold, ECE over ten equal-width bins).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from fedscan.common.metrics.calibration import cross_fitted_ece, recalibration
from fedscan.common.metrics.classification import binary_metrics
from fedscan.common.metrics.histogram import (
    ScoreHistogram,
    expected_calibration_error,
    sensitivity_threshold,
    youden_threshold,
)

SCANNERS = ("scanner low-res", "scanner noisy", "scanner framed")
SHIFTED = ("held-out site", *SCANNERS, "37.5 % normal")
Figures = dict[str, float]


def fold_figures(labels: dict[str, list], scores: dict[str, list]) -> Figures:
    """Every figure of one fold and model variant."""
    val = ScoreHistogram.of(np.asarray(scores["validation"]), np.asarray(labels["validation"]))
    thresholds = {"youden": youden_threshold(val), "sens90": sensitivity_threshold(val, 0.9)}
    calibration = recalibration(val)
    figures: Figures = {}
    for where in ("validation", *SHIFTED):
        y, s = np.asarray(labels[where]), np.asarray(scores[where])
        figures[f"{where}/auc"] = binary_metrics(y, s)["auc"]
        for rule, threshold in thresholds.items():
            point = binary_metrics(y, s, threshold=threshold)
            figures[f"{where}/{rule}/sens"] = point["sensitivity"]
            figures[f"{where}/{rule}/spec"] = point["specificity"]
        figures[f"{where}/ece"] = expected_calibration_error(ScoreHistogram.of(s, y))
        calibrated = calibration.apply(s)
        figures[f"{where}/ece-cal"] = expected_calibration_error(ScoreHistogram.of(calibrated, y))
        figures[f"{where}/ece-local"] = cross_fitted_ece(s, y)
    for key in [k for k in figures if k.startswith(SCANNERS[0])]:  # the mean over the scanners
        name = key.removeprefix(SCANNERS[0])
        figures["scanners" + name] = float(np.mean([figures[s + name] for s in SCANNERS]))
    return figures


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _rows(folds: list[dict]) -> dict[tuple[str, str, str], list[Figures]]:
    grouped: dict[tuple[str, str, str], list[Figures]] = defaultdict(list)
    for fold in folds:
        for variant, scores in fold["scores"].items():
            key = (fold["config"], fold["privacy"], variant)
            grouped[key].append(fold_figures(fold["labels"], scores))
    return grouped


def _table(
    title: str,
    grouped: dict[tuple[str, str, str], list[Figures]],
    columns: list[tuple[str, Callable[[Figures], float]]],
) -> None:
    print(f"\n{title}\n")
    print("| config | privacy | model | folds | " + " | ".join(name for name, _ in columns) + " |")
    print("|---" * (len(columns) + 4) + "|")
    order = {"none": 0, "8": 1, "3": 2}
    for key in sorted(grouped, key=lambda k: (order.get(k[1], 9), k[0], k[2])):
        figures = grouped[key]
        cells = [_cell([pick(f) for f in figures]) for _, pick in columns]
        privacy = "no DP" if key[1] == "none" else f"ε {key[1]}"
        print(f"| {key[0]} | {privacy} | {key[2]} | {len(figures)} | " + " | ".join(cells) + " |")


def _summary(grouped: dict[tuple[str, str, str], list[Figures]]) -> None:
    """The README's table: the final model only, the scanners averaged."""
    final = {key: figures for key, figures in grouped.items() if key[2] == "final"}
    _table(
        "Summary (final model; scanners: the mean over the three profiles)",
        final,
        [
            ("validation AUC", lambda f: f["validation/auc"]),
            ("held-out AUC", lambda f: f["held-out site/auc"]),
            ("scanners AUC", lambda f: f["scanners/auc"]),
            ("held-out sens", lambda f: f["held-out site/youden/sens"]),
            ("held-out spec", lambda f: f["held-out site/youden/spec"]),
            ("scanners sens", lambda f: f["scanners/youden/sens"]),
            ("scanners spec", lambda f: f["scanners/youden/spec"]),
            ("37.5 % normal ECE", lambda f: f["37.5 % normal/ece"]),
            ("… calibrated", lambda f: f["37.5 % normal/ece-cal"]),
        ],
    )


def print_tables(folds: list[dict]) -> None:
    grouped = _rows(folds)
    _summary(grouped)
    _table(
        "AUC: in-distribution validation against held-out sites (seed s holds out shard s mod 3)",
        grouped,
        [(f"{where} AUC", lambda f, w=where: f[f"{w}/auc"]) for where in ("validation", *SHIFTED)],
    )
    operating = []
    for where in ("held-out site", "scanners"):
        for rule, label in (("youden", "Youden"), ("sens90", "sens-0.90 rule")):
            operating += [
                (f"{where}: {label} sens", lambda f, w=where, r=rule: f[f"{w}/{r}/sens"]),
                (f"{where}: {label} spec", lambda f, w=where, r=rule: f[f"{w}/{r}/spec"]),
            ]
    _table(
        "Operating points that transfer: the stored threshold on held-out sites (scanners: the "
        "mean over the three profiles)",
        grouped,
        operating,
    )
    _table(
        "Calibration: ECE (10 bins) of raw scores / after the Platt map fitted on validation / "
        "after a Platt map fitted at the evaluating site (two-fold cross-fitted)",
        grouped,
        [
            (f"{where} ECE {kind}", lambda f, w=where, k=suffix: f[f"{w}/{k}"])
            for where in ("validation", "held-out site", "scanners", "37.5 % normal")
            for kind, suffix in (("raw", "ece"), ("calibrated", "ece-cal"), ("local", "ece-local"))
        ],
    )
