"""Which site this ClientApp serves: its data, its state folder and its privacy policy.

Deployment: the SuperNode is started with ``--node-config 'site-config="/etc/fedscan/site.toml"'``
and everything comes from that file (see :mod:`fedscan.client.site_config`).
Simulation: the engine numbers its virtual nodes (``partition-id``), the run
config lists the simulated sites and the folder their state goes in (the run
directory's, chosen by the launcher), and each keeps its ledger there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from flwr.app import Context

from fedscan.client.run_policy import RunPolicy
from fedscan.client.site_config import PrivacyPolicy, load_site_config
from fedscan.common import defaults, protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import SiteSource, sources_from_json
from fedscan.common.errors import ConfigError, DataError

SIMULATION_NODE_KEY = "partition-id"  # set by Flower's Simulation Engine only
SITE_CONFIG_KEY = "site-config"


@dataclass(frozen=True)
class Site:
    """Everything a handler needs to know about the hospital it runs in."""

    source: SiteSource
    state_dir: Path
    policy: PrivacyPolicy
    device: str = "auto"
    run_policy: RunPolicy = field(default_factory=RunPolicy)  # site.toml [policy]

    @property
    def name(self) -> str:
        return self.source.name


SiteResolver = Callable[[Context], Site]


def resolve_site(context: Context) -> Site:
    if SIMULATION_NODE_KEY in context.node_config:
        return simulated_site(context)
    path = context.node_config.get(SITE_CONFIG_KEY)
    if not path:
        raise ConfigError(
            "This SuperNode has no site configuration; start it with "
            "--node-config 'site-config=\"/path/to/site.toml\"'."
        )
    config = load_site_config(Path(str(path)))
    return Site(config.data, config.state_dir, config.policy, config.device, config.run_policy)


def simulated_site(context: Context) -> Site:
    run_config = dict(context.run_config)
    sites = sources_from_json(str(run_config.get(protocol.SIMULATION_SITES, "[]")))
    index = int(context.node_config[SIMULATION_NODE_KEY])
    if index >= len(sites):
        raise DataError(f"Simulated node {index} has no site in the run configuration.")
    state_root = run_config.get(protocol.SIMULATION_STATE_DIR)
    if not state_root:
        raise ConfigError(
            "The simulation's run configuration names no folder for the sites' state."
        )
    privacy = RunConfig.from_flat(run_config).privacy
    metrics = str(run_config.get(protocol.SIMULATION_METRICS, defaults.METRICS_POLICY))
    return Site(
        sites[index],
        Path(str(state_root)) / sites[index].name,
        replace(PrivacyPolicy.for_simulation(privacy), metrics=metrics),
        str(run_config.get(protocol.DEVICE, "auto")),
    )
