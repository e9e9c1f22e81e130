"""``fedscan privacy report``: the site's privacy report (:mod:`fedscan.client.privacy_report`) as
tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedscan.cli.console import console, fail, print_table
from fedscan.cli.privacy_audit import privacy_audit
from fedscan.common.errors import FedscanError
from fedscan.common.files import json_safe

privacy_app = typer.Typer(help="The site's privacy ledger.", no_args_is_help=True)


@privacy_app.command("report")
def privacy_report(
    config: Annotated[Path, typer.Option(help="The site's site.toml.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """ε spent per run and over the site's lifetime (PRV, RDP beside it), from the site's ledger."""
    from fedscan.client.privacy_report import privacy_report as build_report
    from fedscan.client.site_config import load_site_config

    try:
        report = build_report(load_site_config(config))
    except FedscanError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print_privacy_report(console, report)


_ROWS = (
    ("rounds released", "rounds"),
    ("ε (PRV)", "epsilon_prv"),
    ("ε (RDP, cross-check)", "epsilon_rdp"),
    ("δ", "delta"),
    ("noise multiplier σ", "noise_multiplier"),
    ("clipping norm", "clip_norm"),
    ("DP-SGD steps", "steps"),
    ("sample rate", "sample_rate"),
    ("ε budget", "budget"),
    ("remaining", "remaining"),
)


def print_privacy_report(console: Console, report: dict[str, Any], runs_per_table: int = 3) -> None:
    """One column per run plus the lifetime total (quantities as rows, so it fits a terminal)."""
    columns = [_run_column(run) for run in report["runs"]] + [_lifetime_column(report)]
    for start in range(0, len(columns), runs_per_table):
        chunk = columns[start : start + runs_per_table]
        title = f"Privacy spent by site {report['site']}" if start == 0 else None
        table = Table("", *[name for name, _ in chunk], title=title, title_justify="left")
        for label, key in _ROWS:
            table.add_row(label, *[values.get(key, "") for _, values in chunk])
        print_table(table, console)
    _print_metrics(console, report["metrics"])
    _print_audit(console, report.get("audit"))
    console.print(
        f"Ledger: {report['ledger']} (back it up; deleting it would reset the site's budget).",
        highlight=False,
        soft_wrap=True,
    )


def _print_metrics(console: Console, metrics: dict[str, Any]) -> None:
    """The second budget: each run's metric releases on the validation images."""
    title = (
        f"Metric releases (validation images): policy {metrics['policy']}, "
        f"budget ε {metrics['budget_per_run']:g} per run"
    )
    table = Table("run", "policy", "releases", "ε", "δ", "budget", "remaining", title=title)
    table.title_justify = "left"
    for run in metrics["runs"]:
        table.add_row(
            run["run_id"],
            run["policy"] + (" (degraded)" if run["degraded"] else ""),
            str(run["releases"]),
            _eps(run["epsilon"]),
            f"{run['delta']:g}",
            f"{run['target_epsilon']:g}",
            _eps(run["remaining"]),
        )
    print_table(table, console)


def _print_audit(console: Console, audit: dict[str, Any] | None) -> None:
    """The newest empirical audit's figures, one line per attack (or how to make one)."""
    if audit is None:
        console.print(
            "No empirical audit yet: fedscan privacy audit --checkpoint final.pt --config …"
        )
        return
    console.print(
        f"Last audit ({audit.get('created_at')}, run {audit.get('run_id')}, "
        f"{audit.get('members')} members / {audit.get('non_members')} non-members):",
        highlight=False,
    )
    for attack in audit.get("attacks", []):
        tpr = attack.get("tpr_at_fpr", {})
        console.print(
            f"  {attack['attack']}: AUC {attack['auc']:.3f}, TPR {_percent(tpr.get('0.001'))} at "
            f"0.1 % FPR, {_percent(tpr.get('0.01'))} at 1 % FPR, ε ≥ "
            f"{attack['epsilon_lower_bound']:.2f}",
            highlight=False,
        )


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.2f} %"


def _run_column(run: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return run["run_id"], {
        "rounds": f"{run['rounds_released']} of {run['rounds_planned']}"
        + (f" (+{run['other_releases']} other)" if run.get("other_releases") else "")
        + (f", {run['rounds_masked']} masked" if run.get("rounds_masked") else ""),
        "epsilon_prv": _eps(run["epsilon_prv"]),
        "epsilon_rdp": _eps(run["epsilon_rdp"]),
        "delta": f"{run['delta']:g}",
        "noise_multiplier": f"{run['noise_multiplier']:.4f}",
        "clip_norm": f"{run['clip_norm']:g}",
        "steps": str(run["steps"]),
        "sample_rate": ", ".join(f"{q:.4f}" for q in run["sample_rate"]) or "–",
        "budget": f"{run['target_epsilon']:g}",
        "remaining": _eps(run["remaining"]),
    }


def _lifetime_column(report: dict[str, Any]) -> tuple[str, dict[str, str]]:
    life = report["lifetime"]
    return "lifetime", {
        "rounds": str(life["releases"]),
        "epsilon_prv": _eps(life["epsilon_prv"]),
        "epsilon_rdp": _eps(life["epsilon_rdp"]),
        "delta": f"{life['delta']:g}",
        "steps": str(life["steps"]),
        "budget": f"{report['policy']['max_epsilon_lifetime']:g}",
        "remaining": _eps(life["remaining"]),
    }


def _eps(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3f}"


privacy_app.command("audit")(privacy_audit)


@privacy_app.command("audit-export")
def privacy_audit_export(
    config: Annotated[Path, typer.Option(help="The site's site.toml.")],
    out: Annotated[Path, typer.Option(help="The summary file to write.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Export the newest audit of this model (default: the newest audit).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the summary of an audit for the coordinator's model card: the attacks' figures and
    counts, no path, identifier or score. Recorded in the site's audit log before it is written;
    the coordinator attaches it with `fedscan report RUN_DIR --site-audit FILE`."""
    from fedscan.client.audit_export import export_audit
    from fedscan.client.site_config import load_site_config

    try:
        summary = export_audit(load_site_config(config), out, checkpoint=checkpoint)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    figures = "; ".join(
        f"{attack['attack']}: AUC {attack['auc']:.3f}, ε ≥ {attack['epsilon_lower_bound']:.2f}"
        for attack in summary["attacks"]
    )
    console.print(
        f"wrote {out} (site {summary['site']}; {figures})", highlight=False, soft_wrap=True
    )
