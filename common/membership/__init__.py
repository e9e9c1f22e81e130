"""Membership inference against a trained classifier: the attacks and what their success implies.

An empirical audit of a DP guarantee (Jagielski et al. 2020; Nasr et al. 2021): train on known
*members*, hold back *non-members* from the same distribution, attack, and turn the attack's
true- and false-positive rates into the smallest ε any (ε, δ)-DP training would have to have for
that attack to succeed so often. The result is a **lower bound** on the ε the training really
spends, never a proof of an upper one: a weak attack bounds little.

- :mod:`~fedscan.common.membership.scores`: per-image logit-scaled confidence φ and loss from a
  model's outputs (binary, multiclass, multilabel);
- :mod:`~fedscan.common.membership.attacks`: the loss-threshold attack (Yeom et al. 2018) and the
  offline likelihood-ratio attack (LiRA, Carlini et al. 2022);
- :mod:`~fedscan.common.membership.figures`: ROC AUC, TPR at a fixed FPR, Clopper–Pearson bounds
  and the empirical ε lower bound;
- :mod:`~fedscan.common.membership.shadows`: shadow models on random halves of a pool, trained
  with the product's own training function.

Invariants: every attack score is "higher means more likely a member"; every figure is computed
from scores and membership bits alone (no image, label or key), so what an audit stores or prints
is counts and figures only. Imports no Flower; torch only in ``scores`` and ``shadows``.
"""

from __future__ import annotations

from fedscan.common.membership.attacks import OutFit, fit_out, lira_offline, loss_attack
from fedscan.common.membership.figures import (
    AttackFigures,
    attack_figures,
    clopper_pearson,
    epsilon_lower_bound,
    roc_auc,
    tpr_at_fpr,
)

__all__ = [
    "AttackFigures",
    "OutFit",
    "attack_figures",
    "clopper_pearson",
    "epsilon_lower_bound",
    "fit_out",
    "lira_offline",
    "loss_attack",
    "roc_auc",
    "tpr_at_fpr",
]
