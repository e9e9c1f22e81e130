"""DP-SGD's machinery around a site's training loop, in one place: Opacus' Poisson loader, noise
and accountant, and the per-sample gradients from Opacus' own modes or fedscan's ``fused`` path
(:mod:`fedscan.common.models.persample`), as the model's ``ModelSpec.grad_sample_mode`` says.

Invariants: with DP, Poisson sampling and noise draw from the site's own entropy (``secrets``),
never from a seed the coordinator knows; every step is taken and accounted, an empty batch's
included (its update is the noise alone); each run has a fresh accountant whose history is the
run's release.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedscan.common.errors import ModelError
from fedscan.common.privacy import HistoryEntry

if TYPE_CHECKING:
    from opacus import PrivacyEngine
    from opacus.optimizers import DPOptimizer

    from fedscan.common.models.training import DpStep

# fedscan's own per-sample gradient path: norms and the clipped sum in the one backward pass, no
# autograd weight gradients (see fedscan.common.models.persample).
FUSED = "fused"


@dataclass(frozen=True)
class Stage:
    """What the training loop calls around a step: ``forward`` runs the model on a batch (the
    fused path pads it first, see :func:`padded_forward`); ``after_backward`` turns a backward
    pass into what the optimizer steps on; ``empty`` readies the step of an empty Poisson
    batch."""

    after_backward: Callable[[], object]
    empty: Callable[[], None]
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda model, rows: model(rows)


# Poisson batches vary in size, and each new size costs the CPU convolutions their set-up again:
# padding a batch to a multiple of 4 samples took a U-Net DP step from 135-141 to 122-124 ms
# (batch ≈ 64, 2 threads; multiples of 8: 126-129, of 16: no gain). Padding rows are zeros, cut
# from the output before the loss, so their gradients are exactly 0: the clipped sum is unchanged.
# Only batches of PAD_FROM or more expected samples are padded, so the padding's compute stays
# under ≈ 5 % of a batch on average; small ones (a 3-D model's, a tiny site's) are left as drawn.
PAD_MULTIPLE, PAD_FROM = 4, 32


def pad_multiple(expected_batch: int) -> int:
    """The sample count a fused-path batch is padded to a multiple of (1: not padded)."""
    return PAD_MULTIPLE if expected_batch >= PAD_FROM else 1


def padded_forward(
    clipper: Any, views: int, multiple: int, model: nn.Module, rows: torch.Tensor
) -> torch.Tensor:
    """``model`` on ``rows`` padded with zero rows to a multiple of ``multiple`` samples (of
    ``views`` rows each), the output cut back to the real rows; ``clipper`` is told that the loss
    averages those."""
    real = rows.shape[0]
    target = -(-real // (multiple * views)) * multiple * views
    if target > real:
        rows = torch.cat([rows, rows.new_zeros(target - real, *rows.shape[1:])])
    clipper.loss_rows(real)
    return model(rows)[:real]


@dataclass(frozen=True)
class Private:
    """The model, optimizer and loader to train with, the loop's stage, the accountant's history."""

    model: nn.Module
    optimizer: DPOptimizer
    loader: torch.utils.data.DataLoader
    stage: Stage
    history: Callable[[], list[HistoryEntry]]


@contextmanager
def made_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    *,
    dp: DpStep,
    mode: str,
    views: int,
    device: torch.device,
) -> Iterator[Private]:
    """DP-SGD for one run of local training; on exit ``model`` is a plain module again."""
    engine = _engine()
    # Noise is drawn where the parameters live (a CPU generator cannot feed CUDA noise), from its
    # own OS seed; the loader's Poisson sampling keeps the CPU generator.
    noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
    history = lambda: list(engine.accountant.history)  # noqa: E731 - read after training
    if mode == FUSED:
        with _fused(engine, model, optimizer, loader, dp=dp, views=views, noise=noise) as made:
            yield Private(*made, history=history)
        return
    private, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip_norm,
        poisson_sampling=True,
        noise_generator=noise,
        grad_sample_mode=mode,
    )
    if dp.secure_mode:
        _secure_noise(dp_optimizer, noise)
    stage = Stage(lambda: average_views(private, views), lambda: _zero_grad_samples(private))
    try:
        with warnings.catch_warnings():
            # Known, harmless: the first layer's input needs no gradient.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield Private(private, dp_optimizer, dp_loader, stage, history)
    finally:
        private._close()  # remove Opacus hooks so ``model`` is a plain module again


@contextmanager
def _fused(
    engine: PrivacyEngine,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    *,
    dp: DpStep,
    views: int,
    noise: torch.Generator,
) -> Iterator[tuple[nn.Module, DPOptimizer, torch.utils.data.DataLoader, Stage]]:
    """What ``PrivacyEngine.make_private`` wires (Poisson loader, expected batch, optimizer,
    accountant hook), with the optimizer that takes ready clipped sums in ``.grad``."""
    from opacus.data_loader import DPDataLoader

    from fedscan.common.models.persample import PerSampleClipper, supports
    from fedscan.common.models.persample.optimizer import FusedDPOptimizer

    reason = supports(model)
    if reason:
        raise ModelError(f"This model cannot train on the fused DP path: {reason}.")
    dp_loader = DPDataLoader.from_data_loader(loader, distributed=False)
    sample_rate = 1 / len(dp_loader)
    expected = int(len(dp_loader.dataset) * sample_rate)
    dp_optimizer = FusedDPOptimizer(
        optimizer,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip_norm,
        expected_batch_size=expected,
        loss_reduction="mean",
        generator=noise,
    )
    dp_optimizer.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate))
    if dp.secure_mode:
        _secure_noise(dp_optimizer, noise)
    with PerSampleClipper(model, max_grad_norm=dp.clip_norm, views=views) as clipper:
        forward = partial(padded_forward, clipper, views, pad_multiple(expected))
        yield model, dp_optimizer, dp_loader, Stage(clipper.clip, clipper.empty, forward)


def _engine() -> PrivacyEngine:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # see DpStep.secure_mode
        from opacus import PrivacyEngine  # ≈ 1.2 s: only in processes that train with DP

        return PrivacyEngine(accountant="prv", secure_mode=False)


def _secure_noise(optimizer: DPOptimizer, generator: torch.Generator) -> None:
    """Floating-point-safe noise, from a generator reseeded by the OS after every step."""
    optimizer.secure_mode = True
    accounting = optimizer.step_hook  # the PrivacyEngine's accountant: keep it first

    def account_then_reseed(dp_optimizer: DPOptimizer) -> None:
        if accounting is not None:
            accounting(dp_optimizer)
        generator.manual_seed(secrets.randbits(63))

    optimizer.attach_step_hook(account_then_reseed)


def average_views(model: nn.Module, views: int) -> None:
    """Augmentation multiplicity under DP: each image's per-sample gradient is the mean of its
    ``views`` views' gradients, so clipping, noise and accounting see one gradient per image.

    Opacus' per-sample gradients of a batch-mean loss are each view's own loss gradient (it scales
    by the B·K rows it saw), so the mean over an image's K consecutive rows is that image's
    gradient of its mean view loss. (The fused path does the same inside its clipper.)
    """
    if views == 1:
        return
    for parameter in model.parameters():
        per_view = getattr(parameter, "grad_sample", None)
        if isinstance(per_view, torch.Tensor):
            averaged = per_view.unflatten(0, (-1, views)).mean(dim=1)
            parameter.grad_sample = averaged  # type: ignore[attr-defined]


def _zero_grad_samples(model: nn.Module) -> None:
    """An empty batch on Opacus' modes: no per-sample gradient, so the update is the noise alone.
    No forward pass: Opacus' expanded weights (resnet18) refuse a batch of 0 (1.6 % of the steps
    of a 6-image test site at batch 3)."""
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad_sample = torch.zeros(  # type: ignore[attr-defined]
                (0, *parameter.shape), dtype=parameter.dtype, device=parameter.device
            )


def empty_step(stage: Stage, optimizer: torch.optim.Optimizer) -> None:
    """The DP step of an empty Poisson batch, counted by the accountant like any other."""
    stage.empty()
    optimizer.step()
