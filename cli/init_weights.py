"""``--init WEIGHTS`` of ``fedscan run`` and ``fedscan simulate``: the starting weights checked on
the coordinator's host before the run is submitted, and their table printed.

The check is the coordinator's own loading (:func:`fedscan.common.models.warm_start.start_state`)
run once ahead: a missing, foreign or unmatched file is one line and exit 2 before any engine,
SuperLink or site is involved. The run is submitted with the file's SHA-256 recorded, so the
ServerApp loads exactly the file checked here or fails the run saying it changed.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedscan.cli.console import print_table
from fedscan.common.config import RunConfig
from fedscan.common.models.weight_match import IGNORED, NEW, WeightMatch

_STYLES = {NEW: "yellow", IGNORED: "dim"}


def checked_start(config: RunConfig, console: Console) -> RunConfig:
    """``config`` with its starting weights' SHA-256 recorded, after printing what they give the
    run's model; unchanged without ``init-weights``. Raises FedscanError (one line)."""
    if not config.init_weights:
        return config
    from fedscan.common.models.warm_start import pinned, start_state  # torch: only with --init

    config = pinned(config)
    _, match = start_state(config)
    if match is not None:
        print_table(weights_table(match), console)
        console.print(
            f"  {match.source}; SHA-256 {match.sha256}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    return config


def weights_table(match: WeightMatch) -> Table:
    """Each parameter (a run of loaded ones as one row): loaded, new or ignored, with its shapes."""
    table = Table(title=escape(match.title()), title_justify="left")
    for header in ("parameter", "status", "in the model", "in the file"):
        table.add_column(header)
    for row in match.rows():
        table.add_row(*(escape(cell) for cell in row), style=_STYLES.get(row[1]))
    return table
