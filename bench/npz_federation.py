"""Shared by the benchmarks: one in-process federation over shards of an npz file (no SuperLink, no
Ray)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedscan.client.app import make_client_app
from fedscan.client.site import Site
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import NpzShardSource
from fedscan.server.app import FederationResult, run_federation
from fedscan.server.inprocess import InProcessGrid
from fedscan.server.rundir import RunDirectory


def npz_federation(
    npz: Path,
    root: Path,
    config: RunConfig,
    *,
    sites: int,
    partition: str,
    seed: int = 1,
    wrap: Callable[[Any], Any] | None = None,
    skip: int | None = None,
) -> FederationResult:
    """``config``'s run over ``sites`` shards of ``npz`` (``partition``: iid | dirichlet:ALPHA);
    ``wrap`` may interpose on every site (e.g. a Byzantine one); shard ``skip`` is left out (held
    out for a leave-one-site-out check)."""
    sources = [
        NpzShardSource(f"site-{i}", str(npz), i, sites, partition, seed)
        for i in range(sites)
        if i != skip
    ]
    policy = PrivacyPolicy.for_simulation(config.privacy)
    states = [Site(source, root / "state" / source.name, policy) for source in sources]
    app = make_client_app(
        lambda context: states[int(context.node_config["partition-id"])], device="cpu"
    )
    return run_federation(
        InProcessGrid(wrap(app) if wrap else app, len(sources)),
        config,
        RunDirectory.create(root / "runs"),
    )
