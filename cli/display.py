"""Rich output: the live per-round table, one line per event of a followed run, and the final
summary (which names every gap of a run that completed with gaps)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
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
from fedscan.server.rundir import REPORT_FILE, STATE_COMPLETED_WITH_GAPS, Event


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (no DP)"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class RoundTable:
    """A table that grows by one row per round: live on a terminal, a line per round otherwise."""

    def __init__(
        self, console: Console, site_names: list[str], *, segmentation: bool = False
    ) -> None:
        self.console = console
        self.site_names = site_names
        # (key, column title, line-mode label) of the two quality columns
        self.columns = (
            (("dice", "Dice (pooled val)", "Dice"), ("iou", "IoU", "IoU"))
            if segmentation
            else (("auc", "AUC (pooled val)", "AUC"), ("accuracy", "accuracy", "acc"))
        )
        self.rows: list[list[str]] = []
        self.live: Live | None = None
        self.elapsed = 0.0  # the run's elapsed seconds at the end of the previous round

    def _table(self) -> Table:
        table = Table(title="fedscan — federated rounds")
        first, second = self.columns
        for header in [
            "round",
            first[1],
            "loss",
            second[1],
            *[f"ε {n}" for n in self.site_names],
            "round time s",
        ]:
            table.add_column(header, justify="right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def __enter__(self) -> RoundTable:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, record: dict[str, Any]) -> None:
        aggregated, epsilon = record.get("aggregated", {}), record.get("epsilon", {})
        if (
            not self.site_names and not self.rows
        ):  # a deployment learns its sites from the first round
            self.site_names = sorted(epsilon)
        pooled = record.get(
            "pooled", aggregated
        )  # pooled from histograms; the mean only without them
        (first, _, first_label), (second, _, second_label) = self.columns
        row = [
            str(record["round"]),
            _fmt(pooled.get(first)),
            _fmt(aggregated.get("loss")),
            _fmt(pooled.get(second)),
            *[_fmt(epsilon.get(n), 2) for n in self.site_names],
            _fmt(self._duration(record), 1),
        ]
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self._table())
        else:
            cells = [
                f"round {row[0]}",
                f"{first_label} {row[1]}",
                f"loss {row[2]}",
                f"{second_label} {row[3]}",
            ]
            cells += [
                f"ε[{n}] {value}" for n, value in zip(self.site_names, row[4:-1], strict=True)
            ]
            self.console.print(
                " | ".join(cells + [f"round time {row[-1]} s"]),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        for refusal in record.get("refusals", []):
            self.console.print(
                f"  site {refusal['site']} refused {refusal['phase']}: {refusal['reason']}",
                style="yellow",
                highlight=False,
                markup=False,
            )

    def _duration(self, record: dict[str, Any]) -> float:
        """This round's own training exchange (``train_s``); for runs written before it was
        recorded, the time between two rows (which holds the next round's training too)."""
        elapsed = float(record.get("elapsed_s", 0.0))
        duration, self.elapsed = elapsed - self.elapsed, elapsed
        return float(record["train_s"]) if "train_s" in record else max(duration, 0.0)

    def event(self, event: dict[str, Any]) -> None:
        """One line for an event of the run (events.jsonl), when it is one an operator follows."""
        line = event_line(event)
        if line is not None:
            self.console.print(f"  {line}", style="dim", highlight=False, markup=False)


_EVENTS: dict[str, str] = {
    Event.WAITING_FOR_SITES: "waiting for sites: {connected} of {needed} connected",
    Event.INIT_WEIGHTS_LOADED: "starting weights (SHA-256 {sha256:.12}…): {loaded} parameters "
    "loaded, {new} new, {ignored} ignored",
    Event.ROUND_TRAINING: "round {round} of {rounds}: training at {sites} sites",
    Event.ROUND_AGGREGATED: "round {round} of {rounds}: aggregated the updates of {trained} sites",
    Event.ROUND_RESENT: "round {round}: {unavailable} sites were unavailable; sent again once "
    "they are back",
    Event.WAITING_FOR_APPROVAL: "round {round}: waiting for {pending} sites to approve the run "
    "({sites}; `fedscan client approve` there), {left_s} s left of join-timeout-s",
    Event.FINAL_EVALUATION: "final evaluation at {sites} sites",
    Event.FINAL_EVALUATED: "final evaluation: {evaluated} of {sites} sites evaluated",
    Event.CROSS_SITE_VALIDATION: "cross-site validation",
    Event.CROSS_SITE_FINE_TUNE: "cross-site fine-tune at {sites} sites",
    Event.CROSS_SITE_FINE_TUNED: "cross-site fine-tune: {done} of {sites} sites fine-tuned",
    Event.CROSS_SITE_EVALUATION: "cross-site evaluation of {models} models at {sites} sites",
    Event.CROSS_SITE_EVALUATED: "cross-site evaluation: {done} of {sites} sites evaluated",
    Event.REPORT_WRITTEN: "report written",
    Event.REPORT_FAILED: "the report could not be written: `fedscan report RUN_DIR` retries",
}


def event_line(event: dict[str, Any]) -> str | None:
    """The line an event is shown as; None for an event that has none (or a malformed one)."""
    template = _EVENTS.get(str(event.get("event")))
    try:
        return None if template is None else template.format(**event)
    except (KeyError, IndexError, ValueError):
        return None


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
        console.print(cross_site_table(matrix))
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
