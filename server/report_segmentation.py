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
        *_pooled_lines(pooled),
        "",
        *structure_lines(pooled),
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


def _pooled_lines(pooled: dict[str, Any]) -> list[str]:
    """The pooled Dice and IoU; where sites sent DP releases of their counts, the Dice's 95 %
    interval for that noise (an undefined Dice, "—", when the noise left no foreground at all)."""
    figures = (
        f"- Dice {_fmt(pooled.get('dice'))}, IoU {_fmt(pooled.get('iou'))} over "
        f"{_fmt(pooled.get('n'), 0)} validation images"
    )
    if pooled.get("dice-ci-low") is None:
        return [
            "Pooled validation metrics (from the sites' summed overlap counts, so exactly the "
            "scores of the pooled masks; pixels ≥ 0.5 are foreground):",
            "",
            figures,
        ]
    return [
        "Pooled validation metrics (from the sums of the sites' overlap counts as released under "
        "DP, so noised; pixels ≥ 0.5 are foreground):",
        "",
        f"{figures}; the Dice's 95 % interval for the sites' noise is "
        f"{_fmt(pooled['dice-ci-low'])}–{_fmt(pooled['dice-ci-high'])} (all of 0–1 when the "
        "structures are too small for the noise)",
    ]


def structure_lines(pooled: dict[str, Any]) -> list[str]:
    """A label map's per-structure table (pooled TP, FP, FN → Dice, IoU); nothing for one mask."""
    labels = pooled.get("labels") or {}
    if not labels:
        return []
    lines = [
        f"A label map of {len(labels)} structures: the Dice and IoU above are their means; the "
        f"foreground (any structure) Dice is {_fmt(pooled.get('foreground-dice'))}.",
        "",
        "| structure | Dice | IoU | true-positive px | false-positive px | false-negative px |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_fmt(m.get('dice'))} | {_fmt(m.get('iou'))} | "
        f"{_fmt(m.get('true-positives'), 0)} | {_fmt(m.get('false-positives'), 0)} | "
        f"{_fmt(m.get('false-negatives'), 0)} |"
        for name, m in labels.items()
    ]
    return [*lines, ""]


def round_headers(run: dict[str, Any]) -> tuple[str, ...]:
    """The rounds table's columns: pooled Dice and IoU, and a label map's Dice per structure."""
    classes = run["config"].get("train", {}).get("classes") or ()
    return ("pooled Dice", "pooled IoU", *(f"Dice {name}" for name in classes))


def round_cells(pooled: dict[str, Any]) -> list[str]:
    """A round's pooled Dice and IoU (and each structure's Dice), for the report's rounds table."""
    labels = pooled.get("labels") or {}
    return [
        _fmt(pooled.get("dice")),
        _fmt(pooled.get("iou")),
        *(_fmt(found.get("dice")) for found in labels.values()),
    ]
