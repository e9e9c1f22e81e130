"""The site's side of federated feature standardisation (classical models only).

Asked once per run, before round 1: this site's sums and sums of squares of its
training images' features, and their count (see :mod:`fedscan.common.feature_stats`).
Under DP the release is planned, stored and committed to the ledger as round 0
before anything is sent; asked again (a coordinator resumed), the stored sums
are re-sent and nothing is spent.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import Message

from fedscan.client import replies
from fedscan.client.releases import load_release, save_release
from fedscan.client.site import Site
from fedscan.common.compat import VERSION_KEY, check_compatible
from fedscan.common.config import settings_from_message
from fedscan.common.crosssite import planned_releases
from fedscan.common.errors import ConfigError
from fedscan.common.data import ImageSet
from fedscan.common.feature_stats import (STATS_ROUND, FeatureSums, model_norm_bound, site_sums,
                                          stats_release)
from fedscan.common.models import build_model, get_model_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training import TrainSettings

log = logging.getLogger(__name__)


def release_key(run_id: str) -> str:
    """Stored apart from the training rounds' release, which replaces its predecessor every round."""
    return f"{run_id}#feature-stats"


def feature_stats(msg: Message, site: Site, run_id: str) -> Message:
    config = dict(msg.content["config"])
    check_compatible(config.get(VERSION_KEY))
    settings, privacy, rounds = settings_from_message(config)
    spec = get_model_spec(settings.model)
    if not spec.classical:
        raise ConfigError(f"Model {settings.model!r} uses no feature statistics.")
    stored = load_release(site.state_dir, release_key(run_id), STATS_ROUND) if privacy.enabled else None
    if stored is not None:
        from fedscan.common.ledger import PrivacyLedger

        if PrivacyLedger(site.state_dir).has_release(run_id, STATS_ROUND):
            log.info("Feature statistics of this run were already released; sending the same sums")
            return _reply(msg, site, stored[0], int(stored[1]["num-examples"]))
    data = site.source.load(spec.input_size)
    model = build_model(settings.model, check_dp=False, options=settings.classical)
    features = model.features(data.train.images).numpy()
    clip = model_norm_bound(settings.model, settings.classical, features.shape[1])
    if privacy.enabled:
        rounds = planned_releases(rounds, bool(config.get("cross-site", False)))
        return _private_release(msg, site, run_id, features, clip, settings, privacy,
                                fingerprint_of=data.train, rounds=rounds)
    sums = site_sums(features, clip_norm=clip, noise_multiplier=0.0)
    return _reply(msg, site, _arrays(sums), sums.count)


def _arrays(sums: FeatureSums) -> dict[str, torch.Tensor]:
    return {"sum": torch.from_numpy(sums.total.astype(np.float32)),
            "squares": torch.from_numpy(sums.squares.astype(np.float32))}


def _private_release(msg: Message, site: Site, run_id: str, features: np.ndarray, clip: float,
                     settings: TrainSettings, privacy: PrivacyConfig, *, fingerprint_of: ImageSet,
                     rounds: int) -> Message:
    from fedscan.client import budget
    from fedscan.common.ledger import PrivacyLedger

    ledger = PrivacyLedger(site.state_dir)
    plan = budget.plan_feature_stats(ledger, site.policy, privacy, run_id=run_id, server_round=STATS_ROUND,
                                     rounds=rounds, num_samples=len(features), batch_size=settings.batch_size,
                                     local_epochs=settings.local_epochs, entry=stats_release(settings.classical))
    sums = site_sums(features, clip_norm=clip, noise_multiplier=plan.entry[0])  # OS entropy: unpredictable
    arrays = _arrays(sums)
    # Stored, then committed to the ledger, then sent: a crash never loses a spend.
    save_release(site.state_dir, release_key(run_id), STATS_ROUND, arrays, {"num-examples": sums.count})
    budget.record_release(ledger, plan, server_round=STATS_ROUND, history=[plan.entry],
                          fingerprint=budget.dataset_fingerprint(fingerprint_of))
    return _reply(msg, site, arrays, sums.count)


def _reply(msg: Message, site: Site, arrays: dict[str, torch.Tensor], count: int) -> Message:
    return replies.feature_stats_reply(msg, arrays, count, site.name, dimension=arrays["sum"].shape[0])
