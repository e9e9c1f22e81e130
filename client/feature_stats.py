"""The site's side of federated feature standardisation (classical models only).

Asked once per run, before round 1: this site's sums and sums of squares of its
training images' features, and their count (see :mod:`fedscan.common.models.feature_stats`).
Under DP the release is planned, stored and committed to the ledger as round 0
before anything is sent; asked again (a coordinator resumed), the stored sums
are re-sent and nothing is spent.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from flwr.app import Message

from fedscan.client import replies
from fedscan.client.requests import SiteRequest
from fedscan.client.site import Site
from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import ConfigError
from fedscan.common.models.classical_model import FeatureClassifier
from fedscan.common.models.feature_stats import (
    FeatureSums,
    model_norm_bound,
    site_sums,
    stats_release,
)
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import planned_releases
from fedscan.common.protocol import NUM_EXAMPLES, STATS_ROUND, STATS_SQUARES, STATS_SUM
from fedscan.common.training_settings import TrainSettings


def release_key(run_id: str) -> str:
    """Stored apart from the training rounds' release, which replaces its predecessor every
    round."""
    return f"{run_id}#feature-stats"


def feature_stats(msg: Message, request: SiteRequest, site: Site) -> Message:
    train, privacy = request.settings.train, request.settings.privacy
    if not get_model_spec(train.model).classical:
        raise ConfigError(f"Model {train.model!r} uses no feature statistics.")
    if not privacy.enabled:
        features, clip, _ = _features(site, train)
        sums = site_sums(features, clip_norm=clip, noise_multiplier=0.0)
        return _reply(msg, site, _arrays(sums), sums.count)
    from fedscan.client import budget
    from fedscan.client.releases import Made, release_once

    loaded = functools.cache(lambda: _features(site, train))  # a replayed release loads no data
    rounds = planned_releases(request.settings.rounds, request.settings.cross_site)

    def plan(ledger: Any) -> budget.RoundPlan:
        return budget.plan_feature_stats(
            ledger,
            site.policy,
            privacy,
            run_id=request.run_id,
            server_round=STATS_ROUND,
            rounds=rounds,
            num_samples=len(loaded()[0]),
            batch_size=train.batch_size,
            local_epochs=train.local_epochs,
            entry=stats_release(train.classical),
        )

    def make(ledger: Any, round_plan: budget.RoundPlan) -> Made:
        features, clip, images = loaded()
        sums = site_sums(
            features, clip_norm=clip, noise_multiplier=round_plan.entry[0]
        )  # OS entropy
        return Made(
            _arrays(sums),
            {NUM_EXAMPLES: sums.count},
            [round_plan.entry],
            budget.dataset_fingerprint(images),
        )

    arrays, metrics = release_once(
        site.state_dir,
        run_id=request.run_id,
        server_round=STATS_ROUND,
        plan=plan,
        make=make,
        store_key=release_key(request.run_id),
    )
    return _reply(msg, site, arrays, int(metrics[NUM_EXAMPLES]))


def _features(site: Site, train: TrainSettings) -> tuple[np.ndarray, float, ImageSet]:
    """The site's training features, their L2 bound C, and the images they came from."""
    data = site.source.load(get_model_spec(train.model).input_size)
    model = build_model(train.model, check_dp=False, options=train.classical)
    assert isinstance(model, FeatureClassifier)  # a classical model, checked by feature_stats
    features = model.features(data.train.images).numpy()
    return features, model_norm_bound(train.model, train.classical, features.shape[1]), data.train


def _arrays(sums: FeatureSums) -> dict[str, torch.Tensor]:
    return {
        STATS_SUM: torch.from_numpy(sums.total.astype(np.float32)),
        STATS_SQUARES: torch.from_numpy(sums.squares.astype(np.float32)),
    }


def _reply(msg: Message, site: Site, arrays: dict[str, torch.Tensor], count: int) -> Message:
    return replies.feature_stats_reply(
        msg, arrays, count, site.name, dimension=arrays[STATS_SUM].shape[0]
    )
