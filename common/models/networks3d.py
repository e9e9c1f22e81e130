"""The 3-D networks: volumes (1 × D × S × S voxels in [0, 1]) → logits, each Opacus-compatible.

Same contract as :mod:`fedscan.common.models.networks`: one logit (shape (N,)) or K (shape
(N, K)) for a classifier; a (1 or K + 1) × D × S × S map of logits for the U-Net. GroupNorm or
InstanceNorm only (Opacus cannot bound a sample's gradient through BatchNorm), no in-place ops.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedscan.common.models.layers import SqueezeLogit, no_inplace


class SmallCNN3D(nn.Module):
    """Three 3-D conv blocks (GroupNorm, ReLU, pooling) and a linear head on a coarse 2×4×4 grid,
    max-pooled: where a finding lies (which lung, how high) stays visible to the head, as in the
    2-D SmallCNN, and a nodule of a few voxels is not averaged away over its cell (with average
    pooling the synthetic CT sites' nodules were not learnt in 6 central epochs: AUC 0.42–0.48).
    Small on purpose: a DP round over 100 volumes takes ≈ 20 s on 2 CPU cores (bench/volumes.py)."""

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32), outputs: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels in channels:
            layers += [
                nn.Conv3d(in_channels, out_channels, 3, padding=1),
                nn.GroupNorm(min(4, out_channels // 2), out_channels),
                nn.ReLU(),
                nn.MaxPool3d(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool3d((2, 4, 4))
        self.head = nn.Linear(in_channels * 2 * 4 * 4, outputs)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = (x - 0.5) * 4.0  # inputs are in [0, 1]; centre them for the first conv
        logits = self.head(torch.flatten(self.pool(self.features(centred)), 1))
        return logits.squeeze(1) if self.outputs == 1 else logits


def densenet3d(outputs: int = 1) -> nn.Module:
    """MONAI's DenseNet in 3-D, slimmed for CPU (16 initial features, growth 8, blocks 2-4-4);
    GroupNorm with 4 groups (every layer's width is a multiple of 8)."""
    from monai.networks.nets import DenseNet

    net = DenseNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=outputs,
        init_features=16,
        growth_rate=8,
        block_config=(2, 4, 4),
        norm=("group", {"num_groups": 4}),
        act=("relu", {"inplace": False}),
    )
    return SqueezeLogit(no_inplace(net), outputs)


# A finding fills far less of a volume than of a radiograph: the synthetic CT sites' nodules cover
# 0.04 % of the voxels. From the 2-D U-Net's 2 % prior the 3-D U-Net's Dice stayed 0.000 over 200
# central Adam steps (and 72 SGD steps at lr 0.1 or 0.5); from 0.1 % it was 0.49 after one epoch
# and 0.88 after ten (3 sites × 45 training volumes).
VOLUME_FOREGROUND_PRIOR = 0.001


def unet3d(outputs: int = 1) -> nn.Module:
    """MONAI's residual U-Net in 3-D, 4 levels (8–64 channels), InstanceNorm; the output bias
    starts at a 0.1 % foreground prior (:data:`VOLUME_FOREGROUND_PRIOR`), as the 2-D U-Net's at
    2 % (see its docstring for why a prior)."""
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=outputs,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=1,
        norm=("instance", {"affine": True}),
        act=("relu", {"inplace": False}),
    )
    convolutions = (nn.Conv3d, nn.ConvTranspose3d)
    output = [module for module in net.modules() if isinstance(module, convolutions)][-1]
    assert output.bias is not None  # MONAI's output convolution has a bias
    with torch.no_grad():
        prior = VOLUME_FOREGROUND_PRIOR
        if outputs == 1:
            output.bias.fill_(math.log(prior / (1 - prior)))
        else:
            output.bias.fill_(math.log(prior))
            output.bias[0] = math.log(1 - prior * (outputs - 1))
    return no_inplace(net)
