"""Split labelled datasets into per-site shards (for npz benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedscan.common.errors import ConfigError

_MAX_DRAWS = 100


def parse_partition(spec: str) -> tuple[str, float]:
    """Parse ``iid`` or ``dirichlet:ALPHA`` into (kind, alpha)."""
    if spec == "iid":
        return "iid", 0.0
    kind, _, alpha_text = spec.partition(":")
    if kind == "dirichlet":
        try:
            alpha = float(alpha_text)
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return kind, alpha
    raise ConfigError(f"Unknown partition {spec!r}; use 'iid' or 'dirichlet:ALPHA' with ALPHA > 0.")


def partition_indices(
    label_sets: Sequence[np.ndarray], sites: int, spec: str, seed: int, min_per_site: int = 10
) -> list[list[np.ndarray]]:
    """Shard each labelled set (e.g. train and val) the same way across sites.

    Returns ``shards[set][site]`` = sorted indices; every sample goes to
    exactly one site. ``dirichlet:ALPHA`` draws each class's site proportions
    from Dir(ALPHA) once and applies them to every set, so a site's validation
    data has that site's own class mix (smaller ALPHA = more label skew).
    """
    kind, alpha = parse_partition(spec)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [
            [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), sites)]
            for labels in label_sets
        ]
    # A draw that leaves a site (almost) empty is redrawn: a hospital with no
    # data cannot train, and such a split measures nothing.
    for _ in range(_MAX_DRAWS):
        proportions = rng.dirichlet(np.full(sites, alpha), size=2)
        shards = [_split_by_class(labels, proportions, rng) for labels in label_sets]
        if min(len(shard) for set_shards in shards for shard in set_shards) >= min_per_site:
            return shards
    raise ConfigError(
        f"dirichlet:{alpha} left a site with fewer than {min_per_site} samples in "
        f"{_MAX_DRAWS} draws; use a larger ALPHA or fewer sites."
    )


def _split_by_class(
    labels: np.ndarray, proportions: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    sites = proportions.shape[1]
    shards: list[list[int]] = [[] for _ in range(sites)]
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = (np.cumsum(proportions[label])[:-1] * len(members)).astype(int)
        for site, part in enumerate(np.split(members, cuts)):
            shards[site].extend(part.tolist())
    return [np.sort(np.asarray(shard, dtype=np.int64)) for shard in shards]
