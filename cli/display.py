"""Rich output while a run goes: the live per-round table and one line per event of a followed
run (``cli/summary.py`` shows its end)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedscan.server.rundir import Event


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
