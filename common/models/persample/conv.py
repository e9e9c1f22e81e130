"""Per-sample gradients of convolutions and transposed convolutions (1-, 2- and 3-D).

Three exact ways to get every sample's weight gradient, and none is fastest everywhere:

- **grouped**: fold the batch into the channels (``B·C_in`` channels, ``B·groups`` groups); one call
  to PyTorch's native convolution backward (weight only) gives all ``B`` gradients. Fast where the
  image is large and channels few: 16 → 16 channels at 32², batch 64, 2 threads: 3.1 ms,
  unfolding 20 ms (the plain summed weight gradient: 2.9 ms).
- **unfolded** (2-D, one group): unfold the input into its patches (for a transposed convolution,
  the output gradient: input position ``i`` feeds the output patch at ``i·stride − padding``) and
  take one batched matrix product, as Opacus does. Fast where channels are many and the image
  small: 64 → 128 channels at 8², batch 64: 8.3 ms, grouped 33 ms.
- **ghost** (2-D, one group, where positions are few and channels many): the norms come from Gram
  matrices and the gradients are never formed (:mod:`~fedscan.common.models.persample.ghost`).

:class:`ConvTuner` times the candidates the first time it meets a layer at a batch-size bucket
(one call each, with the norms and the weighted sum that clipping adds; the first's result is
used), keeps the fastest and uses it from then on, as cuDNN's benchmark mode does. Which wins
depends on the machine: on one 2-core machine ghost norms won the U-Net's deep layers; on another
(AMD EPYC, 2 threads) unfolding did, 22.8 against 30.4 ms a step for the four layers. Unfolding
is not timed where a sample's patches would be large (``_UNFOLD_TIMED_UP_TO``). All give the same
values to float rounding, so the choice changes time only. Supported: zero padding given as
numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from fedscan.common.models.persample import ghost
from fedscan.common.models.persample.ghost import Deferred

# (layer, a, g) → per-sample weight gradients, or their factors
Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor | Deferred]


def plain_conv(layer: nn.Module) -> str:
    """Why the rules here cannot take ``layer``, or ``""``."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return f"a convolution with padding {layer.padding!r} ({layer.padding_mode})"
    return ""


def grouped(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    assert isinstance(layer, nn.modules.conv._ConvNd)
    batch, weight = a.shape[0], layer.weight
    # The weight's shape with the batch folded into its first axis; only its shape is read.
    folded = weight.new_empty(1).expand(batch * weight.shape[0], *weight.shape[1:])
    grads = ghost.weight_backward(
        layer,
        a.reshape(1, -1, *a.shape[2:]),
        g.reshape(1, -1, *g.shape[2:]),
        folded,
        batch * layer.groups,
    )
    return grads.view(batch, *weight.shape)


def unfolded(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    assert isinstance(layer, nn.modules.conv._ConvNd)
    rows, patches = ghost.factors(layer, a, g)
    per_sample = torch.bmm(rows, patches.transpose(1, 2))
    return per_sample.view(a.shape[0], *layer.weight.shape)


def _can_unfold(layer: nn.Module) -> bool:
    output_padding = getattr(layer, "output_padding", (0, 0))
    return (
        isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
        and layer.groups == 1
        and all(extra < step for extra, step in zip(output_padding, layer.stride, strict=True))
    )


class ConvTuner:
    """One layer's fastest method per (input shape, batch-size bucket), learned by timing once."""

    def __init__(self) -> None:
        self._chosen: dict[tuple[object, ...], Method] = {}

    def __call__(
        self, layer: nn.Module, a: torch.Tensor, _: torch.Tensor, g: torch.Tensor
    ) -> list[torch.Tensor | Deferred]:
        # Poisson batches vary around the expected size: a bucket per power of two, rounded.
        key = (tuple(a.shape[1:]), round(math.log2(max(a.shape[0], 1))), a.device.type)
        method = self._chosen.get(key)
        weight = self._learn(key, layer, a, g) if method is None else method(layer, a, g)
        if layer.bias is None:
            return [weight]
        return [weight, g.sum(dim=tuple(range(2, g.dim())))]

    def _learn(
        self, key: tuple[object, ...], layer: nn.Module, a: torch.Tensor, g: torch.Tensor
    ) -> torch.Tensor | Deferred:
        methods = _candidates(layer, a, g)
        timings, weights = [], []
        for method in methods:
            started = _now(a.device)
            weights.append(method(layer, a, g))
            if len(methods) > 1:  # the method's whole cost: its norms and sum come in clip()
                ghost.clipped_sum(weights[-1], ghost.squared_norms(weights[-1]))
            timings.append(_now(a.device) - started)
        self._chosen[key] = methods[timings.index(min(timings))]
        return weights[0]


def _candidates(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> list[Method]:
    """The methods worth timing on ``layer``. Where ghost norms are (their Gram matrices smaller
    than the gradient: few positions, many channels), the grouped method never won (64 → 128
    channels at 8²: 33 against 8.3 ms unfolded, 2 threads) and is not timed; unfolding is timed
    only where a sample's patches are small."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    if not _can_unfold(layer):
        return [grouped]
    if ghost.cheaper(layer, a, g):
        formed = a.shape[0] * layer.weight.numel()  # floats of the batch's gradients
        return [ghost.deferred, unfolded] if formed <= _FORMED_UP_TO else [ghost.deferred]
    if _patch_floats(layer, a, g) <= _UNFOLD_TIMED_UP_TO:
        return [grouped, unfolded]
    return [grouped]


# Unfolding copies every sample's patches, (C_in·k²) × positions floats. Past this many it lost to
# the grouped method everywhere measured (2 threads, batch 64: 147 k floats, 16 → 16 channels at
# 32², 20 against 3.1 ms), and timing it once a round per layer made small-cnn's DP round set-up
# 71 ms (15 ms without; 237 images, 2 threads). Layers with many channels and few positions, where
# unfolding wins (64 → 128 channels at 8²: 37 k floats), stay well below it.
_UNFOLD_TIMED_UP_TO = 100_000

# Ghost norms never form the batch's gradients; where those would pass 64 M floats (256 MB: a
# 512 → 512 convolution at batch 64), the instantiating methods are not tried at all.
_FORMED_UP_TO = 64 * 2**20


def _patch_floats(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> int:
    """Floats of one sample's unfolded patches: (channels of the unfolded tensor × kernel taps)
    × positions (a transposed convolution unfolds its output gradient over its input's)."""
    assert isinstance(layer, nn.modules.conv._ConvNd)
    source, rows = (g, a) if layer.transposed else (a, g)
    return source.shape[1] * math.prod(layer.kernel_size) * rows[0, 0].numel()


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
