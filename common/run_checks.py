"""A run configuration's cross-setting rules: what a run may combine, each refusal saying what to
change. :class:`~fedscan.common.config.RunConfig` calls :func:`check_run` when it is made; the
single settings' own ranges are checked there and in ``check_training``.

Invariant: no torch, no Flower (the run configuration is read before either is imported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedscan.common.errors import ConfigError

if TYPE_CHECKING:
    from fedscan.common.config import RunConfig


def check_run(config: RunConfig) -> None:
    """Every cross-setting rule of ``config``; the first broken one as a ConfigError."""
    _check_robust(config)
    _check_central_dp(config)
    _check_secure_aggregation(config)
    _check_operating_point(config)
    _check_init_weights(config)
    _check_trainable(config)


# Aggregators that need only the weighted sum of the updates (FedAdam steps from their mean).
SUM_STRATEGIES = ("fedavg", "fedprox", "fedadam")


def _check_operating_point(config: RunConfig) -> None:
    from fedscan.common.metrics.histogram import parse_operating_point

    try:
        parse_operating_point(config.operating_point)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.operating_point != "youden" and (config.train.task != "classification"):
        raise ConfigError(
            "operating-point applies to binary classification (one threshold); leave it at "
            f"'youden' for task {config.train.task!r}."
        )


def _check_robust(config: RunConfig) -> None:
    if not 0 <= config.server_momentum < 1:
        raise ConfigError("server-momentum must be in [0, 1).")
    if not 0 <= config.trim_fraction < 0.5:
        raise ConfigError(
            "trim-fraction must be in [0, 0.5): the share cut from each end per parameter."
        )
    if config.byzantine_sites < 0:
        raise ConfigError("byzantine-sites must be ≥ 0.")
    if config.norm_gate < 0 or (0 < config.norm_gate < 1):
        raise ConfigError(
            "norm-gate must be 0 (off) or ≥ 1 (a multiple of the round's median update norm)."
        )


def _check_init_weights(config: RunConfig) -> None:
    digest = config.init_weights_sha256
    if digest and not config.init_weights:
        raise ConfigError(
            "init-weights-sha256 pins the file of init-weights; set init-weights too (or neither)."
        )
    if digest and not (len(digest) == 64 and set(digest) <= set("0123456789abcdef")):
        raise ConfigError(
            "init-weights-sha256 must be 64 lowercase hexadecimal digits (`sha256sum FILE`)."
        )


def _check_secure_aggregation(config: RunConfig) -> None:
    if not config.secure_aggregation:
        return
    if config.strategy not in SUM_STRATEGIES:
        raise ConfigError(
            f"secure-aggregation gives the coordinator only the weighted sum of the updates, but "
            f"strategy {config.strategy!r} needs each site's own update; use one of "
            f"{', '.join(SUM_STRATEGIES)}, or set secure-aggregation = false."
        )
    if config.cross_site:
        raise ConfigError(
            "Cross-site validation releases each site's fine-tuned model, which secure "
            "aggregation exists to hide; set cross-site = false or secure-aggregation = false."
        )


# Strategies whose aggregate of a parameter depends on that parameter's updates only, keeping no
# server state: the frozen parameters can simply stay the global model's.
PARTIAL_STRATEGIES = ("fedavg", "fedprox", "median", "trimmed-mean", "krum")


def _check_trainable(config: RunConfig) -> None:
    if config.train.trainable == "all":
        return
    if config.strategy not in PARTIAL_STRATEGIES:
        raise ConfigError(
            f"trainable {config.train.trainable!r} sends back only the trained parameters, but "
            f"strategy {config.strategy!r} keeps server state over all of them; use one of "
            f"{', '.join(PARTIAL_STRATEGIES)}, or trainable = 'all'."
        )
    if config.central_dp or config.secure_aggregation:
        raise ConfigError(
            f"trainable {config.train.trainable!r} is not yet supported with central DP or "
            "secure aggregation; set trainable = 'all' (or turn those off)."
        )


def _check_central_dp(config: RunConfig) -> None:
    if config.central_noise_multiplier < 0:
        raise ConfigError("central-noise-multiplier must be ≥ 0 (0 turns central DP off).")
    if not config.central_dp:
        return
    if config.strategy != "fedavg":
        raise ConfigError(
            "Central DP adds noise to a FedAvg aggregate; use strategy fedavg with it."
        )
    if config.central_clip_norm <= 0:
        raise ConfigError("central-clip-norm must be positive (the L2 bound on one site's update).")
    if not 0 < config.central_delta < 1:
        raise ConfigError("central-delta must be in (0, 1); keep it below 1/(number of sites).")
