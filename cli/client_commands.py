"""The hospital's commands: ``fedscan client check|start|audit|runs|approve|refuse``.

Argument parsing and printing only: the checks and the SuperNode are in :mod:`fedscan.client`.
Nothing here (or below it) imports coordinator code (``tests/test_layout.py`` runs these commands to
prove it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fedscan.client.preflight import Check

from fedscan.cli.console import EXIT_FAILED, console, fail

client_app = typer.Typer(
    help="A hospital site: check its setup, join the federation.", no_args_is_help=True
)
SiteToml = Annotated[Path, typer.Option("--config", help="The site's site.toml.")]


@client_app.command("check")
def client_check(config: SiteToml) -> None:
    """Run the site's pre-flight checks only."""
    if not all(check.ok for check in _preflight(config)):
        raise typer.Exit(2)


@client_app.command("start")
def client_start(config: SiteToml) -> None:
    """Pre-flight checks, then join the federation (Flower SuperNode) until stopped."""
    from fedscan.client.preflight import REGISTERED
    from fedscan.client.site_config import load_site_config
    from fedscan.client.supernode import run_supernode

    failed = [check for check in _preflight(config) if not check.ok]
    if [check.name for check in failed] == [REGISTERED]:  # the site's files are fine: exit 1
        raise fail(failed[0].detail, EXIT_FAILED)
    if failed:
        raise fail("Pre-flight checks failed; fix the items marked FAIL and start again.")
    code, advice = run_supernode(load_site_config(config), config)
    if advice:
        raise fail(advice, EXIT_FAILED)
    raise typer.Exit(code)


@client_app.command("audit")
def client_audit(
    config: SiteToml,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check the hash chain; exit 1 naming the first bad entry."),
    ] = False,
    run: Annotated[str, typer.Option("--run", help="Only this run's entries.")] = "",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the entries as JSON lines.")
    ] = False,
) -> None:
    """What this site was asked and what left it: the hash-chained audit log in state-dir."""
    from fedscan.cli.audit_table import checked, print_audit
    from fedscan.client.audit import AuditLog
    from fedscan.client.site_config import load_site_config

    log = AuditLog(load_site_config(config).state_dir)
    entries = [e for e in log.entries() if not run or e.get("run") == run]
    if as_json:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
    else:
        print_audit(console, entries, log.path)
    if verify:
        console.print(checked(log.verify(), "the ledger's"))


@client_app.command("runs")
def client_runs(
    config: SiteToml,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Runs this site has seen: pending, approved or refused, and what each would spend."""
    from fedscan.cli.audit_table import print_runs
    from fedscan.client.approvals import Approvals
    from fedscan.client.run_spend import planned_spend
    from fedscan.client.site_config import load_site_config
    from fedscan.common.site_settings import SiteSettings

    site = load_site_config(config)
    runs = Approvals(site.state_dir).runs()
    for run in runs:
        run["parsed"] = SiteSettings.from_message(run["settings"])
        if run["state"] == "pending":
            run["spend"] = planned_spend(site, run["parsed"])
    if as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "parsed"} for r in runs], indent=2))
    else:
        print_runs(console, runs)


def _decide(config: Path, run: str, state: str) -> None:
    import getpass

    from fedscan.client.approvals import Approvals
    from fedscan.client.site_config import load_site_config
    from fedscan.common.errors import FedscanError

    try:
        decided = Approvals(load_site_config(config).state_dir).decide(
            run, state, by=getpass.getuser()
        )
    except FedscanError as error:
        raise fail(str(error)) from None
    console.print(f"Run {decided['run_id']} ({decided['config_hash'][:12]}): {state}.")


@client_app.command("approve")
def client_approve(
    run: Annotated[str, typer.Argument(help="Run id, or ≥ 8 characters of its hash.")],
    config: SiteToml,
) -> None:
    """Approve a pending run: the site trains on it from its next message."""
    _decide(config, run, "approved")


@client_app.command("refuse")
def client_refuse(
    run: Annotated[str, typer.Argument(help="Run id, or ≥ 8 characters of its hash.")],
    config: SiteToml,
) -> None:
    """Refuse a run: every message of it is answered with run-refused."""
    _decide(config, run, "refused")


def _preflight(config: Path) -> list[Check]:
    from fedscan.client.preflight import run_checks

    _, checks = run_checks(config)
    for check in checks:
        mark = "[green]ok  [/]" if check.ok else "[bold red]FAIL[/]"
        console.print(f"{mark} {check.name}: ", end="")
        console.print(check.detail, highlight=False, markup=False, soft_wrap=True)
    return checks
