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


def print_privacy_report(console: Console, report: dict[str, Any]) -> None:
    table = Table("run", "rounds", "ε (PRV)", "ε (RDP)", "δ", "σ", "clip", "steps", "sample rate",
                  "run budget", "remaining", title=f"Privacy spent by site {report['site']}",
                  title_justify="left")
    for run in report["runs"]:
        rates = ", ".join(f"{rate:.4f}" for rate in run["sample_rate"]) or "–"
        table.add_row(run["run_id"], f"{run['rounds_released']}/{run['rounds_planned']}",
                      _eps(run["epsilon_prv"]), _eps(run["epsilon_rdp"]), f"{run['delta']:g}",
                      f"{run['noise_multiplier']:.4f}", f"{run['clip_norm']:g}", str(run["steps"]), rates,
                      f"{run['target_epsilon']:g}", _eps(run["remaining"]))
    life = report["lifetime"]
    table.add_section()
    table.add_row("lifetime", str(life["releases"]), _eps(life["epsilon_prv"]), _eps(life["epsilon_rdp"]),
                  f"{life['delta']:g}", "", "", str(life["steps"]), "",
                  f"{report['policy']['max_epsilon_lifetime']:g}", _eps(life["remaining"]), style="bold")
    console.print(table)
    console.print(f"Ledger: {report['ledger']} (back it up; deleting it would reset the site's budget).",
                  highlight=False, soft_wrap=True)


def _eps(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3f}"
