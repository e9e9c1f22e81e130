"""An attack's figures from its scores: ROC AUC, TPR at a low FPR, and the empirical ε lower bound.

The ROC is the empirical one: one point per distinct score ("member" when score ≥ it), ties
kept together, so AUC equals the Mann–Whitney statistic with ties counted half, and TPR at FPR α
is the best TPR among thresholds whose false positives are at most α × non-members — exact, no
interpolation. With fewer than 1/α non-members, α cannot be resolved: the figure is then the TPR
at zero false positives, and ``fpr_resolved`` says so.

**ε lower bound** (Jagielski et al. 2020; Nasr et al. 2021). (ε, δ)-DP forces every membership
test to TPR ≤ e^ε·FPR + δ and, swapping the roles, TNR ≤ e^ε·FNR + δ. At each threshold the
observed counts give Clopper–Pearson bounds (each proportion's two-sided interval at
``confidence``), and

    ε ≥ max( log((TPR_lo − δ) / FPR_hi), log((TNR_lo − δ) / FNR_hi) ),

maximised over thresholds (as the papers do: the threshold is chosen on the same scores, so with
many thresholds the bound is somewhat optimistic; ``tests/common/test_membership.py`` measures it
on identical distributions). 0 when no threshold gives a positive bound. It is a lower bound on
what the training spends, not a certificate of an upper one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from fedscan.common.errors import DataError

FPR_LEVELS = (0.001, 0.01)  # TPR is reported at these false-positive rates
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Roc:
    """Cumulative true and false positives at each threshold, from the strictest (0, 0) on."""

    true_positives: np.ndarray
    false_positives: np.ndarray
    members: int
    non_members: int


def roc(scores: np.ndarray, is_member: np.ndarray) -> Roc:
    """The empirical ROC of ``scores`` (higher: member) against the true ``is_member`` bits."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    member = np.asarray(is_member, dtype=bool).reshape(-1)
    if scores.shape != member.shape or not np.isfinite(scores).all():
        raise DataError("Attack scores must be finite, one per image with its membership bit.")
    if member.all() or not member.any():
        raise DataError("An attack needs both members and non-members to score.")
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], member[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered) != 0), len(ordered) - 1]
    true_positives = np.r_[0, np.cumsum(hits)[ends]]
    false_positives = np.r_[0, np.cumsum(~hits)[ends]]
    return Roc(true_positives, false_positives, int(member.sum()), int((~member).sum()))


def roc_auc(curve: Roc) -> float:
    """Area under the empirical ROC (trapezoids: ties count half)."""
    tpr = curve.true_positives / curve.members
    fpr = curve.false_positives / curve.non_members
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(curve: Roc, fpr: float) -> float:
    """The best TPR among thresholds with at most ``fpr`` × non-members false positives."""
    allowed = curve.false_positives <= fpr * curve.non_members + 1e-9
    return float(curve.true_positives[allowed].max() / curve.members)


def clopper_pearson(
    successes: np.ndarray | int, trials: int, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval (lower, upper) for ``successes`` of ``trials``."""
    k = np.asarray(successes, dtype=np.float64)
    tail = (1.0 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = beta.ppf(tail, np.maximum(k, 1), trials - k + 1)
        upper = beta.ppf(1 - tail, k + 1, np.maximum(trials - k, 1))
    return np.where(k > 0, lower, 0.0), np.where(k < trials, upper, 1.0)


def epsilon_lower_bound(curve: Roc, delta: float, confidence: float = CONFIDENCE) -> float:
    """The largest ε the attack's counts prove at ``confidence`` (see the module), at least 0."""
    tp, fp = curve.true_positives, curve.false_positives
    tpr_low, _ = clopper_pearson(tp, curve.members, confidence)
    _, fpr_high = clopper_pearson(fp, curve.non_members, confidence)
    tnr_low, _ = clopper_pearson(curve.non_members - fp, curve.non_members, confidence)
    _, fnr_high = clopper_pearson(curve.members - tp, curve.members, confidence)
    ratios = np.concatenate([(tpr_low - delta) / fpr_high, (tnr_low - delta) / fnr_high])
    best = float(ratios.max())
    return float(np.log(best)) if best > 1.0 else 0.0


@dataclass(frozen=True)
class AttackFigures:
    """One attack's figures on one model; counts and figures only."""

    attack: str
    auc: float
    tpr_at_fpr: dict[float, float]
    fpr_resolved: dict[float, bool]
    epsilon_lower_bound: float
    delta: float
    members: int
    non_members: int
    confidence: float = CONFIDENCE

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "auc": self.auc,
            "tpr_at_fpr": {f"{fpr:g}": value for fpr, value in self.tpr_at_fpr.items()},
            "fpr_resolved": {f"{fpr:g}": value for fpr, value in self.fpr_resolved.items()},
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "delta": self.delta,
            "confidence": self.confidence,
            "members": self.members,
            "non_members": self.non_members,
        }


def attack_figures(
    attack: str, scores: np.ndarray, is_member: np.ndarray, *, delta: float
) -> AttackFigures:
    """Every figure of ``attack``'s ``scores`` against the true membership bits."""
    curve = roc(scores, is_member)
    return AttackFigures(
        attack=attack,
        auc=roc_auc(curve),
        tpr_at_fpr={fpr: tpr_at_fpr(curve, fpr) for fpr in FPR_LEVELS},
        fpr_resolved={fpr: curve.non_members * fpr >= 1 - 1e-9 for fpr in FPR_LEVELS},
        epsilon_lower_bound=epsilon_lower_bound(curve, delta),
        delta=delta,
        members=curve.members,
        non_members=curve.non_members,
    )
