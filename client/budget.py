"""The site's privacy budget: plan a round against its ledger and policy, then record the release.

The noise multiplier is calibrated once per run — for the smaller of the
run's target ε and the site's per-run maximum, over the planned rounds ×
local epochs × steps — and stored in the ledger, so a restarted site keeps
it. Before every round, the ε this round would bring is checked against the
run target and against the site's lifetime maximum; a round that would
overspend either is refused (``privacy-budget-exhausted``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from fedscan.client import counts
from fedscan.client.ledger import PrivacyLedger, Release, RunRecord
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import DataError, ErrorCode, PrivacyError
from fedscan.common.privacy import (
    HistoryEntry,
    PrivacyConfig,
    calibrate_noise,
    check_delta,
    merge_history,
    sample_rate,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

_TOLERANCE = 1e-3  # relative slack for the accountant's numerical error


@dataclass(frozen=True)
class RoundPlan:
    """What this round may spend: the run's noise, δ and clipping, whether noise is secure,
    the history entry it is planned to add and the run's ε once it has."""

    run: RunRecord
    secure_mode: bool
    entry: HistoryEntry
    projected_epsilon: float


def plan_round(
    ledger: PrivacyLedger,
    policy: PrivacyPolicy,
    privacy: PrivacyConfig,
    *,
    run_id: str,
    server_round: int,
    rounds: int,
    num_samples: int,
    batch_size: int,
    local_epochs: int,
    extra: list[HistoryEntry] | None = None,
) -> RoundPlan:
    """The round's DP parameters, or PrivacyError/DataError when the site's rules forbid it.

    ``extra``: releases of the run other than its training rounds (the classical models' feature
    statistics), planned for when the run's noise is calibrated.
    """
    rate = sample_rate(num_samples, batch_size)
    round_steps = local_epochs * steps_per_epoch(num_samples, batch_size)
    return _plan(
        ledger,
        policy,
        privacy,
        run_id=run_id,
        server_round=server_round,
        num_samples=num_samples,
        schedule=(rate, rounds * round_steps, extra or []),
        entry=lambda run: (run.noise_multiplier, rate, round_steps),
        rounds=rounds,
    )


def plan_feature_stats(
    ledger: PrivacyLedger,
    policy: PrivacyPolicy,
    privacy: PrivacyConfig,
    *,
    run_id: str,
    server_round: int,
    rounds: int,
    num_samples: int,
    batch_size: int,
    local_epochs: int,
    entry: HistoryEntry,
) -> RoundPlan:
    """The feature-statistics release ``entry`` (one Gaussian mechanism, see ``stats_release``)."""
    rate = sample_rate(num_samples, batch_size)
    total_steps = rounds * local_epochs * steps_per_epoch(num_samples, batch_size)
    return _plan(
        ledger,
        policy,
        privacy,
        run_id=run_id,
        server_round=server_round,
        num_samples=num_samples,
        schedule=(rate, total_steps, [entry]),
        entry=lambda run: entry,
        rounds=rounds,
    )


def _plan(
    ledger: PrivacyLedger,
    policy: PrivacyPolicy,
    privacy: PrivacyConfig,
    *,
    run_id: str,
    server_round: int,
    num_samples: int,
    schedule: tuple[float, int, list[HistoryEntry]],
    entry: Callable[[RunRecord], HistoryEntry],
    rounds: int,
) -> RoundPlan:
    if ledger.has_release(run_id, server_round):
        # Its stored update is gone (a later round replaced it): training again would be a
        # second, unaccounted release of the same round.
        raise PrivacyError(
            f"Round {server_round} of this run was already released and cannot be released again.",
            code=ErrorCode.ROUND_ALREADY_RELEASED,
        )
    if num_samples < policy.min_samples:
        raise DataError(
            f"The site has {num_samples} training samples, fewer than its policy's minimum "
            f"of {policy.min_samples}.",
            code=ErrorCode.TOO_FEW_SAMPLES,
        )
    delta = min(privacy.delta, policy.delta)
    check_delta(delta, num_samples)
    rate, total_steps, extra = schedule
    run = ledger.run(run_id) or _start_run(
        ledger,
        policy,
        privacy,
        run_id=run_id,
        rounds=rounds,
        delta=delta,
        rate=rate,
        total_steps=total_steps,
        extra=extra,
    )
    this_release = entry(run)
    projected = ledger.epsilon(run.delta, run_id=run_id, extra=[this_release])
    _refuse_if_over(projected, run.target_epsilon, "the run's budget")
    if math.isfinite(policy.max_epsilon_lifetime):
        _refuse_if_over(
            ledger.epsilon(policy.delta, extra=[this_release]),
            policy.max_epsilon_lifetime,
            "the site's lifetime budget",
        )
    return RoundPlan(run, privacy.secure_mode or policy.secure_mode, this_release, projected)


def _start_run(
    ledger: PrivacyLedger,
    policy: PrivacyPolicy,
    privacy: PrivacyConfig,
    *,
    run_id: str,
    rounds: int,
    delta: float,
    rate: float,
    total_steps: int,
    extra: list[HistoryEntry],
) -> RunRecord:
    target = min(privacy.epsilon, policy.max_epsilon_per_run)
    if counts.noised(policy, privacy):
        extra = [*extra, counts.count_entry()]  # the noised training-image count
    sigma = calibrate_noise(
        target_epsilon=target, delta=delta, sample_rate=rate, total_steps=total_steps, extra=extra
    )
    log.info(
        "Calibrated noise multiplier %.4f for epsilon=%s over %s rounds", sigma, target, rounds
    )
    return ledger.start_run(RunRecord(run_id, sigma, target, delta, privacy.clip_norm, rounds))


def _refuse_if_over(projected: float, limit: float, what: str) -> None:
    if projected > limit * (1 + _TOLERANCE):
        raise PrivacyError(
            f"Training this round would bring epsilon to {projected:.3f}, above {what} "
            f"({limit:g}); the site declines.",
            code=ErrorCode.BUDGET_EXHAUSTED,
        )


def epsilon_after(
    ledger: PrivacyLedger, plan: RoundPlan, history: list[HistoryEntry], recounted: bool = False
) -> float:
    """The run's ε once this round's ``history`` is added (the planned value when it matches and
    no other release — ``recounted``: the count — was recorded since the plan)."""
    if merge_history(history) == [plan.entry] and not recounted:
        return plan.projected_epsilon
    return ledger.epsilon(plan.run.delta, run_id=plan.run.run_id, extra=history)


def record_release(
    ledger: PrivacyLedger,
    plan: RoundPlan,
    *,
    server_round: int,
    history: list[HistoryEntry],
    fingerprint: str,
) -> None:
    """Commit this round's release durably, before anything is sent."""
    (sigma, rate, _), steps = history[0], sum(n for _, _, n in history)
    if any(entry[:2] != (sigma, rate) for entry in history):
        raise PrivacyError(
            "A round mixed noise or sampling settings; refusing to send.",
            code=ErrorCode.PRIVACY_ERROR,
        )
    ledger.record(
        Release(
            plan.run.run_id,
            server_round,
            sigma,
            rate,
            steps,
            plan.run.clip_norm,
            plan.run.delta,
            "prv",
            fingerprint,
        )
    )


def dataset_fingerprint(data: ImageSet) -> str:
    """A hash of exactly what was trained on (tensors, not files): stays at the site, in its
    ledger."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(data.images.detach().cpu().numpy().tobytes())
    digest.update(data.labels.detach().cpu().numpy().tobytes())
    return digest.hexdigest()
