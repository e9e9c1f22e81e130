"""Opacus' optimizer for ready clipped sums, with its parameter list fixed when it is made.

Opacus reads ``DPOptimizer.params`` afresh at every step, as the parameters that *currently*
require gradients. While a :class:`~fedscan.common.models.persample.PerSampleClipper` is attached
none do, so Opacus' list would be empty: no noise would be added and nothing would be stepped,
silently. Importing this module imports Opacus.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.optimizers import DPOptimizerFastGradientClipping
from torch import nn


class FusedDPOptimizer(DPOptimizerFastGradientClipping):
    """Noise, scaling and accounting of ``.grad`` holding each step's clipped per-sample sum."""

    def __init__(self, optimizer: torch.optim.Optimizer, **options: Any) -> None:
        self._fixed = [
            p for group in optimizer.param_groups for p in group["params"] if p.requires_grad
        ]
        super().__init__(optimizer, **options)

    @property
    def params(self) -> list[nn.Parameter]:
        return self._fixed
