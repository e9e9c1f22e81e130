"""Opacus' PRV accountant, with the RDP behind its domain bound computed once per (σ, rate).

``PRVAccountant`` sizes its discretisation domain (``compute_safe_domain_size``: Gopi et al.,
remark 5.6) from the RDP ε of the whole history and of each entry alone. RDP at Opacus' 99
fractional orders is a series summed in Python, per order: 90 % of one PRV evaluation (0.33 of
0.37 s on a 2-core AMD EPYC host), and a one-entry history paid for it twice. Both bounds come
from each entry's one-step RDP vector times its steps, so that vector is computed once per
(σ, sample rate) and remembered for the process: a calibration pays it once per σ tried, and a
round's budget checks (the run's ε, the site's lifetime ε, the ε after the round) once in all.

Invariant: only :meth:`PRVAccountant._get_domain` is replaced, by the same arithmetic in the same
order as Opacus 1.6.0 (pinned) — ε is Opacus' own, bit for bit (``tests/common/test_privacy.py``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.analysis.prv import Domain

_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS)


@functools.lru_cache(maxsize=4096)
def _one_step_rdp(sigma: float, sample_rate: float) -> np.ndarray:
    """RDP of one step at every order (read-only: it is shared)."""
    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=sigma, steps=1, orders=list(_ORDERS)
    )
    rdp.flags.writeable = False
    return rdp


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """``RDPAccountant.get_epsilon`` of ``history``: Opacus sums ``rdp · steps`` per entry."""
    rdp = sum([_one_step_rdp(sigma, rate) * steps for sigma, rate, steps in history])
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=list(_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


def safe_domain_size(
    prvs: list[Any], compositions: list[int], eps_error: float, delta_error: float
) -> float:
    """``opacus.accountants.analysis.prv.compute_safe_domain_size``, from remembered RDP."""
    total = sum(compositions)
    bound = _rdp_epsilon(
        [(p.noise_multiplier, p.sample_rate, n) for p, n in zip(prvs, compositions, strict=True)],
        delta_error / 4,
    )
    for prv in prvs:
        alone = [(prv.noise_multiplier, prv.sample_rate, 1)]
        bound = max(bound, _rdp_epsilon(alone, delta_error / (8 * total)))
    return max(bound, eps_error) + 3


class RememberingPRVAccountant(PRVAccountant):
    """Opacus' PRV accountant; its domain from :func:`safe_domain_size`."""

    def _get_domain(
        self,
        prvs: list[Any],
        num_self_compositions: list[int],
        eps_error: float,
        delta_error: float,
    ) -> Domain:
        size = safe_domain_size(prvs, num_self_compositions, eps_error, delta_error)
        total = sum(num_self_compositions)
        mesh_size = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
        return Domain.create_aligned(-size, size, mesh_size)
