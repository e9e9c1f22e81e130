"""Shared terminal output of every ``fedscan`` command: consoles, exit codes, one-line failures."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1  # the job ran and failed (e.g. every site refused)
EXIT_USAGE = 2  # bad arguments or unusable input: fix and rerun


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``message`` as one line on stderr; raise the returned Exit."""
    # Messages name TOML sections like [tls]: escaped, or rich would take them for markup and drop
    # them.
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    return typer.Exit(code)
