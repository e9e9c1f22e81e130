"""What a pending run would spend at this site, for ``fedscan client runs``: the noise it would
calibrate, its releases, and ε for the run and over the site's lifetime once it is done.

Computed the way the first round would (:mod:`fedscan.client.budget`), from the site's own data
count and ledger; nothing is recorded.
"""

from __future__ import annotations

from typing import Any

from fedscan.client.ledger import PrivacyLedger
from fedscan.client.site import Site
from fedscan.client.site_config import SiteConfig
from fedscan.common.errors import FedscanError
from fedscan.common.privacy import (
    calibrate_noise,
    planned_releases,
    sample_rate,
    steps_per_epoch,
)
from fedscan.common.site_settings import SiteSettings


def planned_spend(config: SiteConfig, settings: SiteSettings) -> dict[str, Any]:
    """σ, releases, the run's ε and the lifetime ε after it (or the reason it cannot train)."""
    from fedscan.client.scoring import load_for

    site = Site(config.data, config.state_dir, config.policy, config.device, config.run_policy)
    releases = planned_releases(settings.rounds, settings.cross_site)
    if not settings.privacy.enabled:
        return {"releases": releases, "refusal": "the run asks for no DP"}
    try:
        samples = len(load_for(site, settings.train).train)
    except FedscanError as error:
        return {"releases": releases, "refusal": f"data: {error}"}
    train, policy = settings.train, config.policy
    rate = sample_rate(samples, train.batch_size)
    steps = releases * train.local_epochs * steps_per_epoch(samples, train.batch_size)
    target = min(settings.privacy.epsilon, policy.max_epsilon_per_run)
    delta = min(settings.privacy.delta, policy.delta)
    sigma = calibrate_noise(target_epsilon=target, delta=delta, sample_rate=rate, total_steps=steps)
    lifetime = PrivacyLedger(config.state_dir).epsilon(policy.delta, extra=[(sigma, rate, steps)])
    return {
        "samples": samples,
        "noise_multiplier": sigma,
        "releases": releases,
        "epsilon_run": target,
        "epsilon_lifetime_after": lifetime,
        "lifetime_budget": policy.max_epsilon_lifetime,
    }
