"""Pieces the 2-D and 3-D networks share: the logit wrapper, the in-place fix, the prior."""

from __future__ import annotations

import torch
from torch import nn

# Segmentation heads start at the logit of a 2 % foreground prior (see networks._unet).
FOREGROUND_PRIOR = 0.02


class SqueezeLogit(nn.Module):
    """Wrap a MONAI classifier so that one output unit returns shape (N,), K units (N, K)."""

    def __init__(self, net: nn.Module, outputs: int = 1) -> None:
        super().__init__()
        self.net = net
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits.squeeze(1) if self.outputs == 1 else logits


class StandardizedConv2d(nn.Conv2d):
    """A convolution whose filters are standardised (zero mean, unit variance over each filter's
    weights) before use: weight standardisation (Qiao et al. 2019), which with GroupNorm let
    De et al. (2022) train deeper networks under DP-SGD without batch statistics. Opacus has no
    hook for this layer, so its per-sample gradients come from functorch (exact, slower)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        mean = weight.mean(dim=(1, 2, 3), keepdim=True)
        variance = weight.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        standardised = (weight - mean) / torch.sqrt(variance + 1e-5)
        return nn.functional.conv2d(
            x, standardised, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def no_inplace(model: nn.Module) -> nn.Module:
    # MONAI's norm/act arguments do not reach every layer: fix what remains.
    from opacus.validators import ModuleValidator

    for module in model.modules():
        if hasattr(module, "inplace"):
            setattr(module, "inplace", False)  # noqa: B010 - an attribute of some module types only
    return ModuleValidator.fix(model)
