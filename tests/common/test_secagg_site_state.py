"""A site kept on disk between the round's messages: restored from its JSON state at every step,
it ends the round exactly as a site kept in memory (the sum recovered), and refuses as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedscan.common.secagg import (
    SecAggAggregator,
    SecAggConfig,
    SecAggProtocolError,
    SecAggSite,
    UnmaskRequest,
)
from fedscan.common.secagg.quantise import clip

DIMENSION = 50


def _config(threshold: int = 2) -> SecAggConfig:
    return SecAggConfig("run-s", 1, DIMENSION, threshold=threshold, clip_bound=1.0)


def _stored(site: SecAggSite, config: SecAggConfig) -> SecAggSite:
    """Through JSON, as a site's state file holds it (the threshold may arrive only later)."""
    return SecAggSite.from_state(json.loads(json.dumps(site.to_state())), config)


def test_a_site_restored_at_every_step_recovers_the_sum() -> None:
    # Prepare: advertised under a placeholder threshold, the round's own one arrives with the roster
    rng = np.random.default_rng(1)
    inputs = {f"{100 + i}": (rng.normal(scale=0.1, size=DIMENSION), 10 + i) for i in range(3)}
    config = _config()
    sites = {name: SecAggSite(name, _config(threshold=2)) for name in inputs}
    aggregator = SecAggAggregator(config)
    # Execute
    for site in sites.values():
        aggregator.add_advert(site.advertise())
    roster = aggregator.close_adverts()
    sites = {name: _stored(site, config) for name, site in sites.items()}
    for site in sites.values():
        aggregator.add_shares(site.share_keys(roster))
    deliveries = aggregator.close_shares()
    sites = {name: _stored(site, config) for name, site in sites.items()}
    for name, site in sites.items():
        update, weight = inputs[name]
        aggregator.add_masked_input(site.mask(deliveries[name], update, weight))
    request = aggregator.close_masked_inputs()
    sites = {name: _stored(site, config) for name, site in sites.items()}
    for site in sites.values():
        aggregator.add_answer(site.unmask(request))
    result = aggregator.finish()
    # Assert
    plain = sum(w * clip(x, 1.0) for x, w in inputs.values())
    assert np.max(np.abs(result.weighted_sum - plain)) < result.error_bound


def test_a_restored_site_still_runs_each_step_once() -> None:
    config = _config()
    site = SecAggSite("100", config)
    site.advertise()
    with pytest.raises(SecAggProtocolError, match="at advertised, not new"):
        _stored(site, config).advertise()
    with pytest.raises(SecAggProtocolError):
        _stored(site, config).unmask(UnmaskRequest(("100",)))
