"""Shared terminal output of every ``fedscan`` command: consoles, exit codes, one-line failures."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1  # the job ran and failed (e.g. every site refused)
EXIT_USAGE = 2  # bad arguments or unusable input: fix and rerun
EXIT_PARTIAL = 3  # the run completed with gaps: a final model, but a phase missed sites it needed


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``message`` as one line on stderr; raise the returned Exit."""
    # Messages name TOML sections like [tls]: escaped, or rich would take them for markup and drop
    # them.
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def print_table(table: Table, on: Console | None = None) -> None:
    """``table`` on ``on`` (standard output), whole: off a terminal rich assumes 80 columns and cuts
    cells ("st-marys-h…"), so a pipe gets it as wide as its widest row."""
    target = on or console
    if target.is_terminal:
        target.print(table)
        return
    width = Measurement.get(target, target.options.update_width(10_000), table).maximum
    Console(file=target.file, width=max(width, target.width)).print(table)
