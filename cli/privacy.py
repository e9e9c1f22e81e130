"""``fedscan privacy report``: what the site has spent, per run and over its lifetime, from its ledger."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from fedscan.common.ledger import PrivacyLedger
from fedscan.common.privacy import epsilon_spent
from fedscan.common.site_config import SiteConfig


def privacy_report(config: SiteConfig) -> dict[str, Any]:
    """Every run in the ledger and the lifetime total: ε by PRV and RDP, with the parameters behind it."""
    ledger = PrivacyLedger(config.state_dir)
    policy = config.policy
    runs = []
    for run in ledger.runs():
        releases = ledger.releases(run.run_id)
        history = [release.history for release in releases]
        spent = epsilon_spent(history, run.delta)
        runs.append({
            "run_id": run.run_id, "rounds_released": len(releases), "rounds_planned": run.planned_rounds,
            "epsilon_prv": spent, "epsilon_rdp": epsilon_spent(history, run.delta, accountant="rdp"),
            "delta": run.delta, "noise_multiplier": run.noise_multiplier, "clip_norm": run.clip_norm,
            "steps": sum(r.steps for r in releases),
            "sample_rate": sorted({round(r.sample_rate, 6) for r in releases}),
            "target_epsilon": run.target_epsilon, "remaining": max(run.target_epsilon - spent, 0.0)})
    history = [release.history for release in ledger.releases()]
    lifetime = epsilon_spent(history, policy.delta)
    return {
        "site": config.name, "ledger": str(ledger.path),
        "policy": {"max_epsilon_per_run": policy.max_epsilon_per_run,
                   "max_epsilon_lifetime": policy.max_epsilon_lifetime, "delta": policy.delta},
        "runs": runs,
        "lifetime": {"releases": len(history), "steps": sum(n for _, _, n in history), "epsilon_prv": lifetime,
                     "epsilon_rdp": epsilon_spent(history, policy.delta, accountant="rdp"),
                     "delta": policy.delta, "remaining": max(policy.max_epsilon_lifetime - lifetime, 0.0)},
    }


_ROWS = (("rounds released", "rounds"), ("ε (PRV)", "epsilon_prv"), ("ε (RDP, cross-check)", "epsilon_rdp"),
         ("δ", "delta"), ("noise multiplier σ", "noise_multiplier"), ("clipping norm", "clip_norm"),
         ("DP-SGD steps", "steps"), ("sample rate", "sample_rate"), ("ε budget", "budget"),
         ("remaining", "remaining"))


def print_privacy_report(console: Console, report: dict[str, Any], runs_per_table: int = 3) -> None:
    """One column per run plus the lifetime total (quantities as rows, so it fits a terminal)."""
    columns = [_run_column(run) for run in report["runs"]] + [_lifetime_column(report)]
    for start in range(0, len(columns), runs_per_table):
        chunk = columns[start:start + runs_per_table]
        title = f"Privacy spent by site {report['site']}" if start == 0 else None
        table = Table("", *[name for name, _ in chunk], title=title, title_justify="left")
        for label, key in _ROWS:
            table.add_row(label, *[values.get(key, "") for _, values in chunk])
        console.print(table)
    console.print(f"Ledger: {report['ledger']} (back it up; deleting it would reset the site's budget).",
                  highlight=False, soft_wrap=True)


def _run_column(run: dict[str, Any]) -> tuple[str, dict[str, str]]:
    return run["run_id"], {
        "rounds": f"{run['rounds_released']} of {run['rounds_planned']}", "epsilon_prv": _eps(run["epsilon_prv"]),
        "epsilon_rdp": _eps(run["epsilon_rdp"]), "delta": f"{run['delta']:g}",
        "noise_multiplier": f"{run['noise_multiplier']:.4f}", "clip_norm": f"{run['clip_norm']:g}",
        "steps": str(run["steps"]), "sample_rate": ", ".join(f"{q:.4f}" for q in run["sample_rate"]) or "–",
        "budget": f"{run['target_epsilon']:g}", "remaining": _eps(run["remaining"])}


def _lifetime_column(report: dict[str, Any]) -> tuple[str, dict[str, str]]:
    life = report["lifetime"]
    return "lifetime", {"rounds": str(life["releases"]), "epsilon_prv": _eps(life["epsilon_prv"]),
                        "epsilon_rdp": _eps(life["epsilon_rdp"]), "delta": f"{life['delta']:g}",
                        "steps": str(life["steps"]), "budget": f"{report['policy']['max_epsilon_lifetime']:g}",
                        "remaining": _eps(life["remaining"])}


def _eps(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3f}"
