"""DP-SGD's clipped gradient sum in one backward pass, without autograd's weight gradients.

While attached, the model's trainable parameters do not require gradients, so autograd computes
only the gradients of activations. Where a layer's input is not in the graph (the first layer's,
or a branch from the data), its output is made a new leaf that requires a gradient: the graph
starts there, and no gradient of the data is computed (small-cnn: the first convolution's input
gradient and the input scaling's, ≈ 10 % of a step). A forward hook
on each layer with parameters keeps the layer's input and output and hooks the output; in the
backward pass that hook gets the output's gradient and the layer's rule
(:mod:`~fedscan.common.models.persample.rules`) turns both into each sample's parameter gradients.
After the backward pass, :meth:`PerSampleClipper.clip` computes each sample's norm over all
parameters, Opacus' clipping factor ``min(1, C / (norm + 1e-6))`` and writes the clipped sum to
``parameter.grad``, which :class:`~fedscan.common.models.persample.optimizer.FusedDPOptimizer`
(Opacus' optimizer for ready sums) noises, scales and accounts.

Invariants: the loss is a mean over the batch's rows (every fedscan training loss is), so a row's
gradient is the hook's gradient times the row count (applied to the per-sample gradients). A
batch padded with zero rows after its real ones (``private.padded_forward``) has its output cut
to the real rows before the loss, so the padding's gradients are exactly 0, and
:meth:`PerSampleClipper.loss_rows` gives the count the loss averages; with
``views`` augmented views per image, a sample's gradient is the mean of its ``views`` consecutive
rows, clipped once. Per-sample gradients
live only between a backward pass and the next :meth:`clip` or :meth:`empty`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from fedscan.common.models.persample.ghost import Deferred, clipped_sum, squared_norms
from fedscan.common.models.persample.rules import GradsFn, rule_for

# Opacus' stabiliser in its clipping factor (DPOptimizer.clip_and_accumulate), kept identical so
# that both paths clip to the same factor.
NORM_EPSILON = 1e-6


class UnsupportedModel(ValueError):
    """A trainable layer has no per-sample rule: train this model with Opacus' hooks instead."""


def trainable_layers(model: nn.Module) -> list[tuple[nn.Module, GradsFn]]:
    """The layers owning trainable parameters, each with its rule's fresh function;
    :class:`UnsupportedModel` names the first layer that has none."""
    layers = []
    for name, layer in model.named_modules():
        if not any(p.requires_grad for p in layer.parameters(recurse=False)):
            continue
        rule, reason = rule_for(layer)
        if rule is None:
            raise UnsupportedModel(f"layer {name or '(root)'}: {reason}")
        layers.append((layer, rule.fresh()))
    return layers


class PerSampleClipper:
    """Clipped per-sample gradient sums for ``model``; use as a context manager around training."""

    def __init__(self, model: nn.Module, *, max_grad_norm: float, views: int = 1) -> None:
        self._model = model
        self._layers = trainable_layers(model)
        self._max_grad_norm = max_grad_norm
        self._views = views
        self._params = [
            p
            for layer, _ in self._layers
            for p in layer.parameters(recurse=False)
            if p.requires_grad
        ]  # a frozen parameter gets no gradient and stays frozen
        self._trainable = set(self._params)
        self._pending: dict[nn.Parameter, torch.Tensor | Deferred] = {}
        self._rows = 1
        self._loss_rows: int | None = None  # set by loss_rows() for one step
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> PerSampleClipper:
        for param in self._params:
            param.requires_grad_(False)
        for layer, rule in self._layers:
            self._handles.append(layer.register_forward_hook(partial(self._forward, rule=rule)))
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        for param in self._params:
            param.requires_grad_(True)

    def _forward(
        self, layer: nn.Module, inputs: tuple[Any, ...], output: Any, *, rule: GradsFn
    ) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor) or not torch.is_grad_enabled():
            return None  # evaluation (no_grad): nothing will flow back
        started = None
        if not output.requires_grad:  # nothing before this layer is in the graph: start it here
            started = output = output.detach().requires_grad_(True)
        activation = inputs[0].detach()
        output.register_hook(partial(self._backward, layer, rule, activation, output.detach()))
        return started

    def _backward(
        self,
        layer: nn.Module,
        rule: GradsFn,
        activation: torch.Tensor,
        output: torch.Tensor,
        grad: torch.Tensor,
    ) -> None:
        # The rows' own gradients are ``grad × rows``; the factor is applied once, in :meth:`clip`,
        # to the per-sample gradients rather than to every output gradient here.
        self._rows = self._loss_rows or grad.shape[0]
        grads = rule(layer, activation, output, grad.detach())
        for param, per_row in zip(layer.parameters(recurse=False), grads, strict=True):
            if param not in self._trainable:
                continue
            per_sample = self._per_sample(per_row)
            earlier = self._pending.get(param)  # a layer used twice in one forward pass
            if earlier is not None:  # norms of deferred parts do not add: form the gradients
                per_sample = _formed(earlier) + _formed(per_sample)
            self._pending[param] = per_sample

    def _per_sample(self, per_row: torch.Tensor | Deferred) -> torch.Tensor | Deferred:
        if isinstance(per_row, Deferred):
            return per_row.with_views(self._views)
        if self._views == 1:
            return per_row
        return per_row.unflatten(0, (-1, self._views)).mean(dim=1)

    def loss_rows(self, rows: int) -> None:
        """The next backward pass is of a loss averaged over its batch's first ``rows`` rows: the
        batch was padded after them, and the padding's gradients are 0."""
        self._loss_rows = rows

    def clip(self) -> torch.Tensor:
        """Write each parameter's clipped per-sample sum to ``.grad``; return the samples' norms
        (a padded batch's padding samples included, at 0)."""
        self._loss_rows = None
        grads = [self._pending.pop(param) for param in self._params]
        squared = torch.stack([squared_norms(g) for g in grads], dim=1).sum(dim=1)
        norms = squared.sqrt() * self._rows
        factor = (self._max_grad_norm / (norms + NORM_EPSILON)).clamp(max=1.0) * self._rows
        for param, per_sample in zip(self._params, grads, strict=True):
            param.grad = clipped_sum(per_sample, factor)
        return norms

    def empty(self) -> None:
        """An empty Poisson batch: a zero sum, so the step releases noise alone."""
        self._pending.clear()
        self._loss_rows = None
        for param in self._params:
            param.grad = torch.zeros_like(param)


def _formed(per_sample: torch.Tensor | Deferred) -> torch.Tensor:
    return per_sample.instantiate() if isinstance(per_sample, Deferred) else per_sample
