"""The end of a run on the terminal: the final pooled metrics in one sentence, the gaps of a run
that completed with gaps (each named), the cross-site matrix, ε per site against its budget and
each site's metric policy. A run with gaps ends its command with EXIT_PARTIAL once all is shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedscan.cli.class_tables import class_table, structure_table
from fedscan.cli.console import EXIT_PARTIAL, print_table
from fedscan.common.metrics.crosssite import metric_epsilon
from fedscan.common.protocol import (
    ACCURACY,
    AUC,
    BALANCED_ACCURACY,
    DICE,
    HD95,
    IOU,
    MACRO_AUC,
    MICRO_AUC,
    SENSITIVITY,
    SPECIFICITY,
)
from fedscan.server.report_format import fmt as _fmt
from fedscan.server.rundir import REPORT_FILE, STATE_COMPLETED_WITH_GAPS


def gap_lines(state: str, gaps: list[dict[str, Any]]) -> list[str]:
    """The run's state and, for a run that completed with gaps, one line per gap."""
    from fedscan.server.coverage import gaps_from_status

    found = gaps_from_status({"gaps": gaps})
    if not found:
        return []
    return [f"[bold yellow]{state}[/]: the results miss sites:"] + [
        f"  gap: {escape(gap.sentence())}" for gap in found
    ]


def cross_site_table(document: dict[str, Any]) -> Table:
    """The cross-site matrix (AUC of each model at each site, and pooled) as a table."""
    from fedscan.common.metrics.crosssite import CrossSiteMatrix

    matrix = CrossSiteMatrix.from_json(document)
    table = Table(title="Cross-site validation — AUC of each model (rows) at each site (columns)")
    for header in ["model", *matrix.sites, "pooled"]:
        table.add_column(header, justify="right")
    for model, row in zip(matrix.models, matrix.values("auc"), strict=True):
        table.add_row(
            model, *[_fmt(value) for value in row], _fmt(matrix.pooled.get(model, {}).get("auc"))
        )
    return table


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The end of a simulation: final pooled metrics, its gaps, ε per site against the budget,
    where things are. The summary is the command's last word: a run that completed with gaps
    ends it with EXIT_PARTIAL once printed."""
    final = summary["final"]
    console.print(final_line(final), highlight=False)
    if "classes" in (final.get("pooled") or {}):
        print_table(class_table(final["pooled"]), console)
    if (final.get("pooled") or {}).get("labels"):
        print_table(structure_table(final["pooled"]["labels"]), console)
    for line in gap_lines(summary.get("state", ""), summary.get("gaps", [])):
        console.print(line, highlight=False)
    matrix = summary.get("matrix") or {}
    if matrix:
        print_table(cross_site_table(matrix), console)
    _print_epsilon(
        console, final.get("epsilon", {}), matrix.get("epsilon", {}), summary["epsilon_target"]
    )
    _print_metric_policies(console, final, metric_epsilon(matrix))
    if final.get("central_epsilon") is not None:
        console.print(
            f"  central (site-level) ε = {final['central_epsilon']:.3f} at δ = "
            f"{summary['central_delta']:g}, on the aggregate",
            highlight=False,
        )
    run_dir = Path(summary["run_dir"])
    console.print(
        f"Wall time {summary['wall_s']} s. Run directory: {run_dir}\n"
        f"Final model: {summary['final_model']}\nReport: {run_dir / REPORT_FILE}",
        highlight=False,
        soft_wrap=True,  # paths whole, for copying: the terminal wraps them, not rich
    )
    if summary.get("state") == STATE_COMPLETED_WITH_GAPS:
        raise typer.Exit(EXIT_PARTIAL)


def final_line(final: dict[str, Any]) -> str:
    """The last round's pooled validation metrics, in one sentence."""
    pooled = final.get("pooled") or {}

    def number(key: str) -> float:
        return float("nan") if pooled.get(key) is None else pooled[key]

    head = f"\n[bold]Final[/bold] (round {final.get('round')}): pooled validation "
    if "classes" in pooled:
        top1 = ""
        if BALANCED_ACCURACY in pooled:
            top1 = (
                f"; top-1 accuracy {number(ACCURACY):.3f}, balanced accuracy "
                f"{number(BALANCED_ACCURACY):.3f}, macro-F1 {number('macro-f1'):.3f}"
            )
        return (
            f"{head}macro AUC {number(MACRO_AUC):.3f} over {len(pooled['classes'])} classes "
            f"(micro {number(MICRO_AUC):.3f}){top1}; macro ECE {number('macro-ece'):.3f}"
        )
    if DICE in pooled:
        return head + _dice_sentence(pooled, final.get("evaluate", {}))
    return (
        f"{head}AUC {number(AUC):.3f} (95 % CI {number('auc-ci-low'):.3f}–"
        f"{number('auc-ci-high'):.3f}); at threshold {number('threshold'):.3f}: sensitivity "
        f"{number(SENSITIVITY):.3f}, specificity {number(SPECIFICITY):.3f}, accuracy "
        f"{number(ACCURACY):.3f}; ECE {number('ece'):.3f}"
        + (
            f" ({number('ece-calibrated'):.3f} after recalibration; a calibrated model would "
            f"show {number('ece-floor'):.3f} on {number('n'):.0f} images)"
            if "ece-calibrated" in pooled
            else ""
        )
    )


def _dice_sentence(pooled: dict[str, Any], sites: dict[str, Any]) -> str:
    """Pooled Dice (with its interval where sites' DP releases noised it), IoU, and per site."""
    per_site = ", ".join(
        f"{name} Dice {_fmt(m.get(DICE))} HD95 {_fmt(m.get(HD95), 1)} px"
        for name, m in sorted(sites.items())
    )
    noise = ""
    if pooled.get("dice-ci-low") is not None:
        noise = (
            f" (95 % interval {pooled['dice-ci-low']:.3f}–{pooled['dice-ci-high']:.3f} for the "
            "sites' DP noise)"
        )
    return (
        f"Dice {_fmt(pooled.get(DICE))}{noise}, IoU {_fmt(pooled.get(IOU))} over "
        f"{_fmt(pooled.get('n'), 0)} images; per site: {per_site}"
    )


def _print_metric_policies(
    console: Console, final: dict[str, Any], cross_site: dict[str, float]
) -> None:
    """Each site's metric release policy and the ε its metric releases spent (validation images),
    the cross-site release included (``cross_site``: the matrix's figures, when it has them)."""
    spent = {**final.get("metrics_epsilon", {}), **cross_site}
    for name, policy in sorted(final.get("metrics_policy", {}).items()):
        shown = f", ε {spent[name]:.3f} on validation images" if name in spent else ""
        console.print(f"  metrics[{name}]: {policy}{shown}", highlight=False, markup=False)


def _print_epsilon(
    console: Console, epsilon: dict[str, float | None], fine_tuned: dict[str, float], target: float
) -> None:
    """ε per site against the budget, after the local fine-tune where the run made one."""
    for name, spent in {**epsilon, **fine_tuned}.items():
        within = "no DP" if spent is None else ("within" if spent <= target * 1.001 else "OVER")
        shown = "∞" if spent is None else f"{spent:.3f}"
        after = ", after the local fine-tune" if name in fine_tuned else ""
        console.print(
            f"  ε[{name}] = {shown} (budget {target:g}: {within}{after})",
            highlight=False,
            markup=False,
        )
