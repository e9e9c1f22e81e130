"""The site's privacy report: what it has spent, per run and over its lifetime, from its own ledger.

ε is recomputed from the ledger's rows (PRV, RDP beside it as a cross-check), never read from a
cache; the report stays at the site (it names the ledger's path). Training and metric releases
are two budgets (the training images and the validation images are different people), both shown.
"""

from __future__ import annotations

from typing import Any

from fedscan.client.ledger import PrivacyLedger
from fedscan.client.metric_ledger import MetricLedger
from fedscan.client.site_config import SiteConfig
from fedscan.common.privacy import epsilon_spent


def privacy_report(config: SiteConfig) -> dict[str, Any]:
    """Every run in the ledger and the lifetime total: ε by PRV and RDP, with the parameters behind
    it."""
    ledger = PrivacyLedger(config.state_dir)
    policy = config.policy
    runs = []
    for run in ledger.runs():
        releases = ledger.releases(run.run_id)
        history = [release.history for release in releases]
        spent = epsilon_spent(history, run.delta)
        rounds = [release for release in releases if release.round >= 1]
        masked = ledger.masked_rounds(run.run_id)
        runs.append(
            {
                "run_id": run.run_id,
                "rounds_released": len(rounds),
                # round 0: the feature statistics; −1: the training-image count (client/counts.py)
                "other_releases": len(releases) - len(rounds),
                "rounds_planned": run.planned_rounds,
                "epsilon_prv": spent,
                "epsilon_rdp": epsilon_spent(history, run.delta, accountant="rdp"),
                "delta": run.delta,
                "noise_multiplier": run.noise_multiplier,
                "clip_norm": run.clip_norm,
                "steps": sum(r.steps for r in rounds),
                "sample_rate": sorted({round(r.sample_rate, 6) for r in rounds}),
                "target_epsilon": run.target_epsilon,
                "remaining": max(run.target_epsilon - spent, 0.0),
                # secure aggregation: rounds whose update left masked, and its L2 clip bound
                "rounds_masked": len(masked),
                "masked_clip_bound": sorted(set(masked.values())),
            }
        )
    history = [release.history for release in ledger.releases()]
    lifetime = epsilon_spent(history, policy.delta)
    return {
        "site": config.name,
        "ledger": str(ledger.path),
        "policy": {
            "max_epsilon_per_run": policy.max_epsilon_per_run,
            "max_epsilon_lifetime": policy.max_epsilon_lifetime,
            "delta": policy.delta,
        },
        "runs": runs,
        "lifetime": {
            "releases": len(history),
            "steps": sum(n for _, _, n in history),
            "epsilon_prv": lifetime,
            "epsilon_rdp": epsilon_spent(history, policy.delta, accountant="rdp"),
            "delta": policy.delta,
            "remaining": max(policy.max_epsilon_lifetime - lifetime, 0.0),
        },
        "metrics": metrics_report(config),
        "audit": _latest_audit(config),
    }


def _latest_audit(config: SiteConfig) -> dict[str, Any] | None:
    """The newest `fedscan privacy audit` record kept at the site (figures only), or None."""
    from fedscan.client.privacy_audit import latest_audit  # torch: only when a report is built

    return latest_audit(config)


def metrics_report(config: SiteConfig) -> dict[str, Any]:
    """The second budget: ε of each run's metric releases on the validation images (exact
    Gaussian-DP composition of the ledger's metric rows), the site's metric policy."""
    ledger, policy = MetricLedger(config.state_dir), config.policy
    runs = []
    for run in ledger.runs():
        releases = ledger.releases(run.run_id)
        spent = ledger.epsilon(run.delta, run_id=run.run_id)
        degraded = ledger.degraded(run.run_id)
        runs.append(
            {
                "run_id": run.run_id,
                "policy": "final-only" if degraded else run.policy,
                "degraded": degraded,
                "releases": len(releases),
                "epsilon": spent,
                "delta": run.delta,
                "noise_multipliers": {
                    "round": run.round_noise,
                    "final": run.final_noise,
                    "cross": run.cross_site_noise,
                },
                "target_epsilon": run.target_epsilon,
                "remaining": max(run.target_epsilon - spent, 0.0),
            }
        )
    return {
        "policy": policy.metrics,
        "budget_per_run": policy.max_epsilon_metrics_per_run,
        "runs": runs,
    }
