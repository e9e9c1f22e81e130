"""DP-SGD accounting: calibrate the noise once per run, compose every release, never reset.

A site's spend is a history of (noise multiplier, sample rate, steps) entries,
kept in its privacy ledger (:mod:`fedscan.client.ledger`) across rounds, runs
and restarts. ε comes from the PRV accountant, RDP beside it as a cross-check.
Opacus is imported inside the functions that need it: its import takes ≈ 1.2 s,
and a site starts a fresh process for every message, evaluations included.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from fedscan.common import defaults
from fedscan.common.errors import ConfigError, ErrorCode, PrivacyError
from fedscan.common.settings import setting

HistoryEntry = tuple[float, float, int]


@dataclass(frozen=True)
class PrivacyConfig:
    """The run's privacy target. ``enabled=False`` must be asked for explicitly."""

    epsilon: float = setting(
        defaults.EPSILON,
        help="Privacy budget ε for the whole run, per site (the "
        "site's own per-run maximum may be lower).",
    )
    delta: float = setting(
        defaults.DELTA,
        help="δ of the (ε, δ) guarantee; must be below 1/(training samples) at every site.",
    )
    clip_norm: float = setting(
        defaults.CLIP_NORM, help="Per-sample gradient clipping norm of DP-SGD."
    )
    enabled: bool = setting(
        True,
        key="dp",
        help="Differential privacy at every site; false only for "
        "benchmarks on public data (a warning is printed).",
    )
    secure_mode: bool = setting(
        False, help="Opacus' floating-point-safe noise, reseeded from the OS at every step."
    )

    def __post_init__(self) -> None:
        if self.enabled and not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ConfigError(
                "epsilon must be a positive finite number (e.g. 8); "
                "to train without DP, disable it explicitly."
            )
        if not 0 < self.delta < 1:
            raise ConfigError(
                "delta must be in (0, 1); use a value below 1/(training samples), e.g. 1e-5."
            )
        if self.clip_norm <= 0:
            raise ConfigError("The clipping norm should be a positive value.")


def planned_releases(rounds: int, cross_site: bool) -> int:
    """DP releases a site plans for: one per round, plus the local fine-tune of cross-site
    validation."""
    return rounds + (1 if cross_site else 0)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Poisson-sampled steps per epoch, as Opacus' DPDataLoader takes them."""
    return max(1, math.ceil(num_samples / batch_size))


def sample_rate(num_samples: int, batch_size: int) -> float:
    return 1.0 / steps_per_epoch(num_samples, batch_size)


def check_delta(delta: float, num_samples: int) -> None:
    """δ must stay below 1/n, or the guarantee allows leaking one record outright."""
    if delta >= 1.0 / max(num_samples, 1):
        raise PrivacyError(
            f"delta={delta:g} is not below 1/(training samples)={1.0 / max(num_samples, 1):.2g}; "
            "lower delta in the run configuration.",
            code=ErrorCode.DELTA_TOO_LARGE,
        )


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    total_steps: int,
    extra: list[HistoryEntry] | None = None,
) -> float:
    """Noise multiplier σ so that ``total_steps`` steps at ``sample_rate`` spend ``target_epsilon``
    — together with the fixed releases in ``extra``, when given. Never more: ε(σ) ≤ the target,
    within 0.1 % of it; raises when ``extra`` alone spends the target."""
    fixed = tuple(sorted(extra or []))
    if (spent := epsilon_spent(list(fixed), delta)) >= target_epsilon:
        raise PrivacyError(
            f"The run's other releases already spend epsilon {spent:.2f} of {target_epsilon:g}; "
            "raise epsilon or their noise.",
            code=ErrorCode.BUDGET_EXHAUSTED,
        )
    return _calibrated(fixed, target_epsilon, delta, sample_rate, total_steps)


# Each ε costs one PRV evaluation, 0.3-0.8 s on a 2-core host; bisection took 21 of them (11 s of
# a site's first round, measured on an AMD EPYC VM). Regula falsi on log ε (Illinois variant, which
# keeps the bracket shrinking from both sides) takes 7-9 in all, the bracket included (measured
# over 5 settings, from a 12-step site with its noised count to 2 000 steps at ε 1).
_CALIBRATION_TOLERANCE = 1e-3  # ε(σ) ends in [target · (1 - tolerance), target]
_SIGMA_FLOOR = 0.3  # the least σ calibration returns, as the bisection did


@functools.lru_cache(maxsize=256)  # pure, like _epsilon: a simulation's sites share one
def _calibrated(
    fixed: tuple[HistoryEntry, ...],
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    total_steps: int,
) -> float:
    def excess(sigma: float) -> float:  # > 0: σ spends more than the target
        spent = epsilon_spent([*fixed, (sigma, sample_rate, total_steps)], delta)
        return math.log(spent / target_epsilon)

    bracket = _bracket(excess)
    return _SIGMA_FLOOR if bracket is None else _regula_falsi(excess, *bracket)


Point = tuple[float, float]  # (σ, excess)


def _bracket(excess: Callable[[float], float]) -> tuple[Point, Point] | None:
    """A σ that spends more than the target and one that does not, doubling up or halving down
    from 2 (None when even the floor does not)."""
    high = (2.0, excess(2.0))
    if high[1] > 0:
        while high[1] > 0:
            low, high = high, (high[0] * 2, excess(high[0] * 2))
        return low, high
    while high[0] > _SIGMA_FLOOR:
        sigma = max(high[0] / 2, _SIGMA_FLOOR)
        low = (sigma, excess(sigma))
        if low[1] > 0:
            return low, high
        high = low
    return None


def _regula_falsi(excess: Callable[[float], float], low: Point, high: Point) -> float:
    """The smallest σ found with ``excess(σ) <= 0``, between ``low`` (excess > 0) and ``high``."""
    (a, f_a), (b, f_b) = low, high
    weight_a, weight_b, moved = f_a, f_b, ""  # Illinois: a side kept twice has its weight halved
    for _ in range(40):
        if f_b > -_CALIBRATION_TOLERANCE or b - a < 1e-6 * b:
            break
        middle = b - weight_b * (b - a) / (weight_b - weight_a)
        middle = min(max(middle, a + 1e-3 * (b - a)), b - 1e-3 * (b - a))
        f_middle = excess(middle)
        if f_middle > 0:
            a, f_a, weight_a = middle, f_middle, f_middle
            weight_b /= 2 if moved == "a" else 1
            moved = "a"
        else:
            b, f_b, weight_b = middle, f_middle, f_middle
            weight_a /= 2 if moved == "b" else 1
            moved = "b"
    return b


def merge_history(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """Entries with the same (σ, sample rate) as one entry with their steps summed.

    Composition does not depend on order, so ε is unchanged; the PRV accountant's cost grows
    with the number of entries, so a run's rounds cost one entry, not one each.
    """
    steps: dict[tuple[float, float], int] = {}
    for sigma, rate, count in history:
        key = (float(sigma), float(rate))
        steps[key] = steps.get(key, 0) + int(count)
    return [(sigma, rate, count) for (sigma, rate), count in steps.items()]


def epsilon_spent(history: list[HistoryEntry], delta: float, *, accountant: str = "prv") -> float:
    """ε of everything in ``history`` (0.0 when nothing was released)."""
    if not history:
        return 0.0
    return _epsilon(tuple(sorted(merge_history(history))), delta, accountant)


# ε is a pure function of the merged history: remembered per process. A calibration asks for 5-10
# of them, each 0.1-0.6 s (PRV's domain bound evaluates RDP at fractional orders in Python; 10.7 s
# for a 12-image site), and a simulation's same-sized sites ask for the same ones.
@functools.lru_cache(maxsize=4096)
def _epsilon(history: tuple[HistoryEntry, ...], delta: float, accountant: str) -> float:
    from opacus.accountants import RDPAccountant

    from fedscan.common.prv_accountant import RememberingPRVAccountant

    engine = RememberingPRVAccountant() if accountant == "prv" else RDPAccountant()
    engine.history = list(history)
    with warnings.catch_warnings():
        # RDP's "optimal order is the largest alpha" only means its bound is loose;
        # PRV is the number we report.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        # A release without subsampling (rate 1: the classical models' feature statistics) takes
        # log(0) in a branch of the PRV that np.where then discards.
        warnings.filterwarnings(
            "ignore", message="divide by zero encountered in log", category=RuntimeWarning
        )
        return float(engine.get_epsilon(delta=delta))


def gdp_delta(epsilon: float, mu: float) -> float:
    """δ(ε) of μ-Gaussian DP (Dong, Roth & Su 2019): exact for a composition of Gaussian
    mechanisms without subsampling, μ² = Σ 1/z²."""
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    return phi(-epsilon / mu + mu / 2) - math.exp(epsilon) * phi(-epsilon / mu - mu / 2)


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at ``delta`` of μ-GDP (bisection on :func:`gdp_delta`, which falls as ε grows)."""
    low, high = 0.0, 1.0
    while gdp_delta(high, mu) > delta:
        low, high = high, high * 2
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if gdp_delta(middle, mu) > delta else (low, middle)
    return high


def gaussian_epsilon(history: list[HistoryEntry], delta: float) -> float:
    """ε of Gaussian mechanisms without subsampling (every entry's sample rate is 1), exactly:
    their composition is μ-GDP with μ² = Σ steps / σ² (0.0 when nothing was released)."""
    if any(rate != 1.0 for _, rate, _ in history):
        raise ValueError("gaussian_epsilon covers releases without subsampling only.")
    mu_squared = sum(steps / sigma**2 for sigma, _, steps in history)
    return gdp_epsilon(math.sqrt(mu_squared), delta) if mu_squared > 0 else 0.0


def metric_noise(
    *, epsilon: float, delta: float, rounds: int, final: bool, cross_site: bool
) -> tuple[float, float, float]:
    """Noise multipliers (per round, final, cross-site; 0 where none is planned) so that a run's
    planned metric releases spend ``epsilon`` exactly (Gaussian DP). The final evaluation is the
    figure a run reports (the model card's pooled AUC, its interval and threshold): it gets as
    much of μ² as the others together, which share the rest equally — the cross-site evaluation
    one share, all ``rounds`` per-round evaluations together one. So the final release's noise
    is the same with or without the cross-site matrix: √2/μ when anything else is planned."""
    others = {"round": 1.0 if rounds else 0.0, "cross": float(cross_site)}
    shares = {**others, "final": float(final) * max(sum(others.values()), 1.0)}
    if not sum(shares.values()):
        raise PrivacyError("A metric budget needs at least one planned release.")
    low, high = 1e-3, 1.0
    while gdp_delta(epsilon, high) < delta:
        low, high = high, high * 2
    for _ in range(80):  # the μ whose δ(ε) is the site's δ: δ(ε) rises with μ
        middle = (low + high) / 2
        low, high = (middle, high) if gdp_delta(epsilon, middle) < delta else (low, middle)
    mu_squared, total = low**2, sum(shares.values())
    noise = {
        kind: math.sqrt(total / (mu_squared * share)) if share else 0.0
        for kind, share in shares.items()
    }
    return noise["round"] * math.sqrt(max(rounds, 1)), noise["final"], noise["cross"]
