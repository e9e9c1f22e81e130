"""The multiclass and multilabel parts of a run's report: per-class pooled figures, ROC curves per
class and, for multiclass, the pooled confusion matrix.

Every figure comes from the last round's summed evidence (``histograms.json`` and the pooled
record in ``metrics.jsonl``): class names and counts only.
"""

from __future__ import annotations

from typing import Any

from fedscan.common.metrics.classwise import ClassEvidence
from fedscan.common.tasks import LabelScheme
from fedscan.server.report_format import fmt as _fmt


def is_per_class(run: dict[str, Any]) -> bool:
    return "classes" in (run.get("histograms") or {})


def figures(run: dict[str, Any]) -> dict[str, bytes]:
    """One ROC curve per class (one-vs-rest) with the micro-averaged one in black."""
    from fedscan.common.metrics import plots

    document = run["histograms"]
    task = str(run["config"].get("train", {}).get("task"))
    evidence = ClassEvidence.from_lists(
        LabelScheme(task, tuple(document["classes"])), document["pooled"]
    )
    per_class = {name: evidence.histograms[name] for name in evidence.histograms.classes}
    return {"ROC per class": plots.roc(evidence.histograms.total(), per_class, 0.5)}


def task_lines(run: dict[str, Any]) -> list[str]:
    """What the model predicts: its task kind and classes, in the head's order."""
    final = run.get("final") or {}
    task, classes = final.get("task", "?"), ", ".join(final.get("classes", []))
    how = (
        "one class per image (softmax; the prediction is the top class)"
        if task == "multiclass"
        else "any subset of findings per image (a sigmoid per finding, each with its own "
        "operating threshold, Youden on pooled validation, in the table below)"
    )
    return [f"- Task: {task}, {how}; classes in order: {classes}"]


def card_lines(run: dict[str, Any]) -> list[str]:
    """Model-card lines: the headline pooled figures, a table per class, the confusion matrix."""
    pooled = run["history"][-1].get("pooled") or {}
    lines = [
        "Pooled validation metrics (from summed one-vs-rest score histograms per class):",
        "",
        f"- macro AUC {_fmt(pooled.get('macro-auc'))} over {pooled.get('macro-auc-classes')} "
        f"classes with both outcomes; micro AUC {_fmt(pooled.get('micro-auc'))}; macro ECE "
        f"{_fmt(pooled.get('macro-ece'))}",
    ]
    if "balanced-accuracy" in pooled:
        lines.append(
            f"- top-1 accuracy {_fmt(pooled.get('accuracy'))}, balanced accuracy "
            f"{_fmt(pooled.get('balanced-accuracy'))}, macro-F1 {_fmt(pooled.get('macro-f1'))}"
        )
    lines += [
        "",
        "| class | AUC | 95 % CI | threshold | sensitivity | specificity | positives |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_fmt(c.get('auc'))} | {_fmt(c.get('auc-ci-low'))}–"
        f"{_fmt(c.get('auc-ci-high'))} | {_fmt(c.get('threshold'))} | "
        f"{_fmt(c.get('sensitivity'))} | {_fmt(c.get('specificity'))} | "
        f"{_fmt(c.get('positives'), 0)} |"
        for name, c in (pooled.get("classes") or {}).items()
    ]
    return [*lines, "", *_confusion_lines(pooled)]


def _confusion_lines(pooled: dict[str, Any]) -> list[str]:
    matrix, names = pooled.get("confusion"), list(pooled.get("classes") or {})
    if not matrix:
        return []
    lines = [
        "Pooled confusion matrix (rows: true class, columns: predicted, top-1):",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [
        f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(names, matrix, strict=True)
    ]
    return [*lines, ""]
