"""The site's privacy spend for the current run, kept in the node's persistent state.

The noise multiplier is calibrated once, at the site's first round, for the
whole run (target ε, δ, planned rounds × local epochs × steps); the Opacus
accountant history is stored after every round and restored before the next,
so ε accumulates and is never reset. Before training, the ε the round would
bring is checked against the run's target: a round that would overspend is
refused (``privacy-budget-exhausted``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flwr.app import ConfigRecord, Context

from fedscan.common.errors import PrivacyError
from fedscan.common.privacy import (HistoryEntry, PrivacyConfig, calibrate_noise, check_delta,
                                    epsilon_spent, history_from_lists, history_to_lists,
                                    sample_rate, steps_per_epoch)

log = logging.getLogger(__name__)

STATE_KEY = "dp-budget"
_TOLERANCE = 1e-3  # relative slack for the accountant's numerical error


@dataclass(frozen=True)
class RoundBudget:
    noise_multiplier: float
    history: list[HistoryEntry]


def plan_round(context: Context, privacy: PrivacyConfig, *, num_samples: int, batch_size: int,
               local_epochs: int, rounds: int) -> RoundBudget:
    """Noise multiplier and prior history for this round, or PrivacyError."""
    check_delta(privacy.delta, num_samples)
    rate = sample_rate(num_samples, batch_size)
    round_steps = local_epochs * steps_per_epoch(num_samples, batch_size)
    stored = context.state.config_records.get(STATE_KEY)
    if stored is None:
        sigma = calibrate_noise(target_epsilon=privacy.epsilon, delta=privacy.delta,
                                sample_rate=rate, total_steps=rounds * round_steps)
        log.info("Calibrated noise multiplier %.4f for epsilon=%s over %s rounds", sigma,
                 privacy.epsilon, rounds)
        history: list[HistoryEntry] = []
    else:
        sigma, history = float(stored["noise-multiplier"]), history_from_lists(dict(stored))
    projected = epsilon_spent(history + [(sigma, rate, round_steps)], privacy.delta)
    if projected > privacy.epsilon * (1 + _TOLERANCE):
        raise PrivacyError(
            f"Training this round would bring epsilon to {projected:.3f}, above the run's "
            f"budget of {privacy.epsilon:g}; the site declines further rounds.",
            code="privacy-budget-exhausted")
    return RoundBudget(sigma, history)


def record_round(context: Context, noise_multiplier: float, history: list[HistoryEntry],
                 delta: float) -> float:
    """Persist the accountant history (before the update leaves the site); return ε so far."""
    columns = history_to_lists(history)
    context.state[STATE_KEY] = ConfigRecord({"noise-multiplier": noise_multiplier, **columns})
    return epsilon_spent(history, delta)
