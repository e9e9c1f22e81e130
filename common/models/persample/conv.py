"""Per-sample gradients of convolutions and transposed convolutions (1-, 2- and 3-D).

Two exact ways to get every sample's weight gradient, and neither is fastest everywhere:

- **grouped**: fold the batch into the channels (``B·C_in`` channels, ``B·groups`` groups); one call
  to PyTorch's native convolution backward (weight only) gives all ``B`` gradients. Fast where the
  image is large and channels few: 16 → 32 channels at 32², batch 64, 2 cores: 1.1 ms, unfolding
  3.5 ms (the plain summed weight gradient: 0.8 ms).
- **unfolded** (2-D, one group): unfold the input into its patches (for a transposed convolution,
  the output gradient: input position ``i`` feeds the output patch at ``i·stride − padding``) and
  take one batched matrix product, as Opacus does. Fast where channels are many and the image
  small: 64 → 128 channels at 8², batch 64: 3.7 ms, grouped 13.4 ms.

Where positions are few and channels many, neither: the norms come from Gram matrices and the
per-sample gradients are never formed (:mod:`~fedscan.common.models.persample.ghost`). Elsewhere
:class:`ConvTuner` times both the first time it meets a layer at a batch-size bucket (one call
each; the first's result is used), keeps the faster and uses it from then on (as cuDNN's benchmark
mode does); where a sample's patches would be large (``_UNFOLD_TIMED_UP_TO``), it takes the
grouped method without timing unfolding. Both give the same values to float
rounding, so the choice changes time only. Supported: zero padding given as numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from fedscan.common.models.persample import ghost
from fedscan.common.models.persample.ghost import Deferred

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (layer, a, g)


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
    """One layer's faster method per (input shape, batch-size bucket), learned by timing once."""

    def __init__(self) -> None:
        self._chosen: dict[tuple[object, ...], Method] = {}

    def __call__(
        self, layer: nn.Module, a: torch.Tensor, _: torch.Tensor, g: torch.Tensor
    ) -> list[torch.Tensor | Deferred]:
        weight: torch.Tensor | Deferred
        # Poisson batches vary around the expected size: a bucket per power of two, rounded.
        key = (tuple(a.shape[1:]), round(math.log2(max(a.shape[0], 1))), a.device.type)
        method = self._chosen.get(key)
        if _can_unfold(layer) and ghost.cheaper(layer, a, g):
            weight = ghost.deferred(layer, a, g)
        elif method is None:
            weight = self._learn(key, layer, a, g)
        else:
            weight = method(layer, a, g)
        if layer.bias is None:
            return [weight]
        return [weight, g.sum(dim=tuple(range(2, g.dim())))]

    def _learn(
        self, key: tuple[object, ...], layer: nn.Module, a: torch.Tensor, g: torch.Tensor
    ) -> torch.Tensor:
        timed = _can_unfold(layer) and _patch_floats(layer, a, g) <= _UNFOLD_TIMED_UP_TO
        methods: list[Method] = [grouped, unfolded] if timed else [grouped]
        timings, weights = [], []
        for method in methods:
            started = _now(a.device)
            weights.append(method(layer, a, g))
            timings.append(_now(a.device) - started)
        self._chosen[key] = methods[timings.index(min(timings))]
        return weights[0]


# Unfolding copies every sample's patches, (C_in·k²) × positions floats. Past this many it lost to
# the grouped method everywhere measured (2 threads, batch 64: 147 k floats 21.1 against 2.5 ms,
# 295 k 42.8 against 2.7), and timing it once a round per layer made small-cnn's DP round set-up
# 71 ms (15 ms without; 237 images, 2 threads). Layers with many channels and few positions, where
# unfolding wins (64 → 128 channels at 8²: 37 k floats, 3.7 against 17.4 ms), stay well below it.
_UNFOLD_TIMED_UP_TO = 100_000


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
