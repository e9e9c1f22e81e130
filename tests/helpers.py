"""Test helpers: site resolvers and policies; messages and the in-process Grid come from the
package."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fedscan.client.site import Site, SiteResolver
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common.data.sources import FolderSource, SiteSource
from fedscan.server.inprocess import InProcessGrid, instruction, node_context

__all__ = [
    "COARSE_POLICY",
    "OPEN_POLICY",
    "LoopbackGrid",
    "instruction",
    "node_context",
    "site_resolver",
]

# Permissive enough that only the run's own settings decide (tests of the policy set their own).
# δ 1e-3 caps no run δ the tests use, and stays below 1/(validation images) for any test site
# under 1 000 of them: a site releases no DP metric otherwise (client/metric_release.py). A metric
# budget of 20 keeps the metric noise small (σ 0.35 for the final release of a 2-round run), so
# that the tests' 10-image validation splits still give figures to compare.
OPEN_POLICY = PrivacyPolicy(
    max_epsilon_per_run=100.0,
    max_epsilon_lifetime=1000.0,
    delta=1e-3,
    min_samples=1,
    max_epsilon_metrics_per_run=20.0,
)
# Accepting any run δ below 1: for tests of the training-side check δ < 1/(training images).
LOOSE_DELTA_POLICY = replace(OPEN_POLICY, delta=0.5)
# The same, releasing exact coarse metrics (``[privacy] metrics = "coarse"``): for tests that
# compare pooled figures with the images' own (the DP releases are tested on their own).
COARSE_POLICY = replace(OPEN_POLICY, metrics="coarse")


def site_resolver(
    sources: Sequence[SiteSource], state_root: Path, policies: Sequence[PrivacyPolicy] | None = None
) -> SiteResolver:
    """Simulated-node resolver: node ``partition-id`` i is ``sources[i]``, with its own state
    folder."""
    sites = [
        Site(
            with_cache(source),
            Path(state_root) / source.name,
            (policies or [OPEN_POLICY] * len(sources))[i],
        )
        for i, source in enumerate(sources)
    ]
    return lambda context: sites[int(context.node_config["partition-id"])]


def with_cache(source: SiteSource) -> SiteSource:
    """A folder source built without a decode cache gets the session's (conftest.py), as a site
    that reads site.toml gets its default one: without it every message decoded the whole folder
    again, in freshly started decoder processes (≈ 1.3 s a message on a 2-core host)."""
    if isinstance(source, FolderSource) and not source.cache_dir:
        return replace(source, cache_dir=os.environ["FEDSCAN_CACHE_DIR"])
    return source


# The in-process federation lives in the package (benchmarks use it too).
LoopbackGrid = InProcessGrid
