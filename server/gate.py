"""The update sanity gate: what a site's update must pass before any aggregation sees it.

Checked against the global model the coordinator sent this round: the same
parameter names, shapes and kinds of number (float / integer); every value
finite; an update norm (‖site − global‖₂) no more than ``norm_factor`` times the median norm of the
round's updates (0 turns that check off; it needs 3 or more updates to mean
anything); and a ``num-examples`` no larger than the first one the site
reported in this run — a hospital's training set does not grow mid-run, and
a larger claim would buy a larger FedAvg weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """One site's reply, as the gate sees it."""

    site: str
    arrays: Arrays
    num_examples: int


def structural_problem(update: Arrays, sent: Arrays) -> str | None:
    """Why ``update`` cannot be the model ``sent`` after training (None when it can)."""
    if set(update) != set(sent):
        return "wrong-parameters"
    for key, value in update.items():
        # Same kind of number, not the same width: FedAdam's float64 global comes back as the
        # site's float32.
        if value.shape != sent[key].shape or value.dtype.kind != sent[key].dtype.kind:
            return "wrong-shape-or-dtype"
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return "non-finite-values"
    return None


def update_norm(update: Arrays, sent: Arrays) -> float:
    """‖update − sent‖₂ over every floating-point parameter."""
    total = 0.0
    for key, value in update.items():
        if np.issubdtype(value.dtype, np.floating):
            total += float(np.sum((value.astype(np.float64) - sent[key].astype(np.float64)) ** 2))
    return math.sqrt(total)


@dataclass
class UpdateGate:
    """Refuses malformed, outsized or over-claiming updates; remembers each site's declared size."""

    norm_factor: float = 10.0
    declared: dict[str, int] = field(default_factory=dict)

    def refusals(self, candidates: list[Candidate], sent: Arrays) -> dict[str, str]:
        """Site → reason, for every candidate that must not be aggregated this round."""
        refused: dict[str, str] = {}
        norms: dict[str, float] = {}
        for candidate in candidates:
            declared = self.declared.setdefault(candidate.site, candidate.num_examples)
            problem = structural_problem(candidate.arrays, sent)
            if problem is None and candidate.num_examples > declared:
                problem = "num-examples-grew"
            if problem is None:
                norms[candidate.site] = update_norm(candidate.arrays, sent)
            else:
                refused[candidate.site] = problem
        if self.norm_factor > 0 and len(norms) >= 3:
            limit = self.norm_factor * float(np.median(list(norms.values())))
            refused.update(
                {site: "update-norm-outlier" for site, norm in norms.items() if norm > limit}
            )
        return refused
