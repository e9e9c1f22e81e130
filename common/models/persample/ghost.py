"""Ghost norms: a convolution weight's per-sample gradient norms without the gradients themselves.

A sample's weight gradient is ``G = Y Pᵀ`` (``Y``: output-side rows, ``p × T``; ``P``: patches,
``d × T``, over ``T`` positions), so ``‖G‖² = Σ_{t,s} (Pᵀ P)_{ts} (Yᵀ Y)_{ts}``: two ``T × T`` Gram
matrices per sample instead of a ``p × d`` gradient (Li et al. 2022). It is cheaper where positions
are few and channels many, ``2·T² < p·d`` (mixed ghost clipping, Bu et al. 2023): the U-Net's
deeper layers (64 → 128 channels at 8²: 8 192 against 73 728). The clipped sum is then one matrix
product with each sample's rows scaled by its clipping factor (book-keeping: no second backward).

Invariant: the same values as instantiating every ``G`` (to float rounding), which
:meth:`Deferred.instantiate` does when a layer is used twice in one pass (its norms do not add).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional


@dataclass(frozen=True)
class Deferred:
    """One weight's per-sample gradients ``scale · Y_i P_iᵀ``, kept as their factors."""

    rows: torch.Tensor  # (B, p, T)
    patches: torch.Tensor  # (B, d, T)
    shape: torch.Size
    scale: float = 1.0

    def with_views(self, views: int) -> Deferred:
        """A sample's gradient as the mean over its ``views`` consecutive rows: the views'
        positions side by side, scaled by 1/views."""
        if views == 1:
            return self
        return Deferred(
            _fold(self.rows, views), _fold(self.patches, views), self.shape, self.scale / views
        )

    def squared_norms(self) -> torch.Tensor:
        grams = torch.bmm(self.patches.transpose(1, 2), self.patches)
        grams *= torch.bmm(self.rows.transpose(1, 2), self.rows)
        return grams.sum(dim=(1, 2)) * self.scale**2

    def clipped_sum(self, factor: torch.Tensor) -> torch.Tensor:
        batch, p, positions = self.rows.shape
        scaled = (self.rows * (factor * self.scale).view(-1, 1, 1)).transpose(0, 1)
        flat_patches = self.patches.transpose(1, 2).reshape(batch * positions, -1)
        return (scaled.reshape(p, batch * positions) @ flat_patches).view(self.shape)

    def instantiate(self) -> torch.Tensor:
        per_sample = torch.bmm(self.rows, self.patches.transpose(1, 2)) * self.scale
        return per_sample.view(self.rows.shape[0], *self.shape)


def cheaper(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> bool:
    """Whether the Gram matrices (2·T² per sample) are smaller than the gradient (p·d)."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    rows = a if layer.transposed else g
    positions = rows[0, 0].numel()
    return 2 * positions * positions < layer.weight.numel()


def deferred(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> Deferred:
    """A 2-D convolution's (or transposed one's) weight gradients, kept as their factors."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    rows, patches = factors(layer, a, g)
    return Deferred(rows, patches, layer.weight.shape)


def factors(
    layer: nn.Module, a: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows ``(B, p, T)``, patches ``(B, d, T)``) with each sample's weight gradient
    ``rows @ patchesᵀ``. A convolution's patches are its input's; a transposed convolution's are
    its output gradient's (input position ``i`` feeds the output patch at ``i·stride − padding``).
    """
    assert isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer.padding, str)
    source, rows = (g, a) if layer.transposed else (a, g)
    patches = functional.unfold(
        source,
        layer.kernel_size,
        dilation=layer.dilation,
        padding=layer.padding,
        stride=layer.stride,
    )
    return rows.flatten(2), patches


def _fold(per_row: torch.Tensor, views: int) -> torch.Tensor:
    """(B·K, c, T) → (B, c, K·T): each sample's views' positions side by side."""
    rows, channels, positions = per_row.shape
    grouped = per_row.view(rows // views, views, channels, positions).transpose(1, 2)
    return grouped.reshape(rows // views, channels, views * positions)
