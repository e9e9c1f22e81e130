"""Rich output: the live per-round table and the final summary."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (no DP)"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class RoundTable:
    """A table that grows by one row per round: live on a terminal, a line per round otherwise."""

    def __init__(self, console: Console, site_names: list[str]) -> None:
        self.console = console
        self.site_names = site_names
        self.rows: list[list[str]] = []
        self.live: Live | None = None

    def _table(self) -> Table:
        table = Table(title="fedscan — federated rounds")
        for header in ["round", "AUC (pooled val)", "loss", "accuracy", *[f"ε {n}" for n in self.site_names],
                       "time s"]:
            table.add_column(header, justify="right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def __enter__(self) -> "RoundTable":
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, record: dict[str, Any]) -> None:
        aggregated, epsilon = record.get("aggregated", {}), record.get("epsilon", {})
        if not self.site_names and not self.rows:  # a deployment learns its sites from the first round
            self.site_names = sorted(epsilon)
        pooled = record.get("pooled", aggregated)  # pooled from histograms; the mean only without them
        row = [str(record["round"]), _fmt(pooled.get("auc")), _fmt(aggregated.get("loss")),
               _fmt(pooled.get("accuracy")), *[_fmt(epsilon.get(n), 2) for n in self.site_names],
               _fmt(float(record.get("elapsed_s", 0.0)), 1)]
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self._table())
        else:
            cells = [f"round {row[0]}", f"AUC {row[1]}", f"loss {row[2]}", f"acc {row[3]}"]
            cells += [f"ε[{n}] {value}" for n, value in zip(self.site_names, row[4:-1])]
            self.console.print(" | ".join(cells + [f"{row[-1]} s"]), highlight=False, markup=False,
                               soft_wrap=True)
        for refusal in record.get("refusals", []):
            self.console.print(f"  site {refusal['site']} refused {refusal['phase']}: {refusal['reason']}",
                               style="yellow", highlight=False, markup=False)


def cross_site_table(document: dict[str, Any]) -> Table:
    """The cross-site matrix (AUC of each model at each site, and pooled) as a table."""
    from fedscan.common.crosssite import CrossSiteMatrix

    matrix = CrossSiteMatrix.from_json(document)
    table = Table(title="Cross-site validation — AUC of each model (rows) at each site (columns)")
    for header in ["model", *matrix.sites, "pooled"]:
        table.add_column(header, justify="right")
    for model, row in zip(matrix.models, matrix.values("auc")):
        table.add_row(model, *[_fmt(value) for value in row], _fmt(matrix.pooled.get(model, {}).get("auc")))
    return table
