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

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional


@dataclass(frozen=True)
class Deferred:
    """One weight's per-sample gradients ``scale · Y_i P_iᵀ``, kept as their factors;
    ``backward``, when given, maps per-row weights w to Σ_rows w · (row's gradient) with the
    layer's own weight backward (the clipped sum without copying the factors)."""

    rows: torch.Tensor  # (B, p, T)
    patches: torch.Tensor  # (B, d, T)
    shape: torch.Size
    scale: float = 1.0
    backward: Callable[[torch.Tensor], torch.Tensor] | None = None
    views: int = 1  # rows per sample

    def with_views(self, views: int) -> Deferred:
        """A sample's gradient as the mean over its ``views`` consecutive rows: the views'
        positions side by side, scaled by 1/views."""
        if views == 1:
            return self
        folded = (_fold(self.rows, views), _fold(self.patches, views))
        return Deferred(*folded, self.shape, self.scale / views, self.backward, views)

    def squared_norms(self) -> torch.Tensor:
        grams = torch.bmm(self.patches.transpose(1, 2), self.patches)
        grams *= torch.bmm(self.rows.transpose(1, 2), self.rows)
        return grams.sum(dim=(1, 2)) * self.scale**2

    def clipped_sum(self, factor: torch.Tensor) -> torch.Tensor:
        if self.backward is not None:
            # The convolution's own weight backward with each row's output gradient scaled:
            # 1.9 ms against 3.3 ms for the product of the copied factors (64 → 128 channels at
            # 8², batch 64, 2 threads), 2.0 against 5.1 ms for 32 → 64 at 16².
            rows = (factor * self.scale).repeat_interleave(self.views)
            return self.backward(rows).reshape(self.shape)
        batch, p, positions = self.rows.shape
        scaled = (self.rows * (factor * self.scale).view(-1, 1, 1)).transpose(0, 1)
        flat_patches = self.patches.transpose(1, 2).reshape(batch * positions, -1)
        return (scaled.reshape(p, batch * positions) @ flat_patches).view(self.shape)

    def instantiate(self) -> torch.Tensor:
        per_sample = torch.bmm(self.rows, self.patches.transpose(1, 2)) * self.scale
        return per_sample.view(self.rows.shape[0], *self.shape)


def squared_norms(per_sample: torch.Tensor | Deferred) -> torch.Tensor:
    """Each sample's squared gradient norm, from its gradients or their factors."""
    if isinstance(per_sample, Deferred):
        return per_sample.squared_norms()
    # One pass, no squared copy: 1.8 ms against 5.1 ms (pow, then sum) for the U-Net's per-sample
    # gradients at batch 64, one thread.
    return torch.linalg.vector_norm(per_sample.flatten(1), dim=1).square()


def clipped_sum(per_sample: torch.Tensor | Deferred, factor: torch.Tensor) -> torch.Tensor:
    """Σ_samples factor[sample] · (the sample's gradient)."""
    if isinstance(per_sample, Deferred):
        return per_sample.clipped_sum(factor)
    return torch.einsum("i,i...", factor, per_sample)


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
    return Deferred(rows, patches, layer.weight.shape, backward=partial(_weighted, layer, a, g))


def _weighted(
    layer: nn.Module, a: torch.Tensor, g: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Σ_rows weights[row] · (the row's weight gradient): the layer's weight backward with each
    row's output gradient scaled."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    scaled = g * weights.view(-1, *([1] * (g.dim() - 1)))
    return weight_backward(layer, a, scaled, layer.weight, layer.groups)


def weight_backward(
    layer: nn.Module, a: torch.Tensor, g: torch.Tensor, weight: torch.Tensor, groups: int
) -> torch.Tensor:
    """The weight gradient of ``layer``'s convolution (its stride, padding, …) for input ``a``
    and output gradient ``g``, as a ``weight``-shaped tensor in ``groups`` groups: PyTorch's own
    backward, which only reads ``weight``'s shape."""
    assert isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer.padding, str)
    _, grads, _ = torch.ops.aten.convolution_backward(
        g,
        a,
        weight,
        None,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.transposed,
        getattr(layer, "output_padding", (0,) * (a.dim() - 2)),
        groups,
        [False, True, False],
    )
    return grads


def factors(
    layer: nn.Module, a: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows ``(B, p, T)``, patches ``(B, d, T)``) with each sample's weight gradient
    ``rows @ patchesᵀ``. A convolution's patches are its input's; a transposed convolution's are
    its output gradient's (input position ``i`` feeds the output patch at ``i·stride − padding``).
    """
    assert isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer.padding, str)
    source, rows = (g, a) if layer.transposed else (a, g)
    return rows.flatten(2), patches_of(source, layer)


def patches_of(source: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``functional.unfold(source, …)`` with ``layer``'s kernel, stride, padding and dilation:
    ``(B, C·kh·kw, positions)``, channels outermost. Copied out of a strided view of the padded
    input rather than by ``im2col``, which loops per channel: 1.2 against 3.6 ms at 64 × 64 × 8²,
    1.2 against 6.0 ms at 64 × 32 × 16² (3 × 3, 2 threads, AMD EPYC)."""
    assert isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer.padding, str)
    (pad_h, pad_w), (step_h, step_w) = layer.padding, layer.stride
    (dil_h, dil_w), (kernel_h, kernel_w) = layer.dilation, layer.kernel_size
    padded = functional.pad(source, (pad_w, pad_w, pad_h, pad_h)).contiguous()
    batch, channels, height, width = padded.shape
    out_h = (height - dil_h * (kernel_h - 1) - 1) // step_h + 1
    out_w = (width - dil_w * (kernel_w - 1) - 1) // step_w + 1
    s_b, s_c, s_h, s_w = padded.stride()
    windows = padded.as_strided(
        (batch, channels, kernel_h, kernel_w, out_h, out_w),
        (s_b, s_c, dil_h * s_h, dil_w * s_w, step_h * s_h, step_w * s_w),
    )
    return windows.reshape(batch, channels * kernel_h * kernel_w, out_h * out_w)


def _fold(per_row: torch.Tensor, views: int) -> torch.Tensor:
    """(B·K, c, T) → (B, c, K·T): each sample's views' positions side by side."""
    rows, channels, positions = per_row.shape
    grouped = per_row.view(rows // views, views, channels, positions).transpose(1, 2)
    return grouped.reshape(rows // views, channels, views * positions)
