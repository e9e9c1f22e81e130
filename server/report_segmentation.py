"""The segmentation parts of a run's report: pooled and per-site Dice, IoU and Hausdorff-95."""

from __future__ import annotations

from typing import Any

from fedscan.server.report_format import fmt as _fmt


def is_segmentation(run: dict[str, Any]) -> bool:
    return run["config"].get("train", {}).get("task") == "segmentation"


def card_lines(run: dict[str, Any]) -> list[str]:
    """Model-card lines: pooled Dice and IoU of the last round, then one row per site."""
    last = run["history"][-1]
    pooled, evaluate = last.get("pooled") or {}, last.get("evaluate", {})
    lines = [
        "Pooled validation metrics (from the sites' summed overlap counts, so exactly the scores "
        "of "
        "the pooled masks; pixels ≥ 0.5 are foreground):",
        "",
        f"- Dice {_fmt(pooled.get('dice'))}, IoU {_fmt(pooled.get('iou'))} over "
        f"{_fmt(pooled.get('n'), 0)} validation images",
        "",
        "| site | Dice | IoU | Hausdorff-95 (px) | validation loss |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_fmt(m.get('dice'))} | {_fmt(m.get('iou'))} | {_fmt(m.get('hd95'), 1)} | "
        f"{_fmt(m.get('loss'))} |"
        for name, m in sorted(evaluate.items())
    ]
    return lines + [
        "",
        "Hausdorff-95: mean over a site's images where both the prediction and the truth mark "
        "something, in pixels at the model's input size.",
        "",
    ]


ROUND_HEADERS = ("pooled Dice", "pooled IoU")


def round_cells(pooled: dict[str, Any]) -> list[str]:
    """A round's pooled Dice and IoU, for the report's rounds table."""
    return [_fmt(pooled.get("dice")), _fmt(pooled.get("iou"))]
