"""Per-class and per-structure tables of a run's pooled validation figures."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from fedscan.common.protocol import AUC, DICE, IOU, SENSITIVITY, SPECIFICITY
from fedscan.server.report_format import fmt as _fmt


def class_table(pooled: dict[str, Any]) -> Table:
    """Each class's pooled figures: AUC with its interval, the threshold and the rates at it."""
    table = Table(title="Per class — pooled validation (one-vs-rest)")
    columns = ("class", "AUC", "95 % CI", "threshold", "sensitivity", "specificity", "positives")
    for header in columns:
        table.add_column(header, justify="right")
    for name, found in pooled["classes"].items():
        table.add_row(
            escape(name),
            _fmt(found.get(AUC)),
            f"{_fmt(found.get('auc-ci-low'))}–{_fmt(found.get('auc-ci-high'))}",
            _fmt(found.get("threshold")),
            _fmt(found.get(SENSITIVITY)),
            _fmt(found.get(SPECIFICITY)),
            _fmt(found.get("positives"), 0),
        )
    return table


def structure_table(labels: dict[str, Any]) -> Table:
    """Each structure of a label map: pooled Dice and IoU, and the pixel counts behind them."""
    table = Table(title="Per structure — pooled validation (label map)")
    for header in ("structure", "Dice", "IoU", "true-positive px", "false-negative px"):
        table.add_column(header, justify="right")
    for name, found in labels.items():
        table.add_row(
            escape(name),
            _fmt(found.get(DICE)),
            _fmt(found.get(IOU)),
            _fmt(found.get("true-positives"), 0),
            _fmt(found.get("false-negatives"), 0),
        )
    return table
