"""Local training at a site: DP-SGD with Opacus, or plain SGD when DP is explicitly off."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.models.batches import Batch, training_batches
from fedscan.common.models.private import Private, Stage, empty_step, made_private
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import HistoryEntry
from fedscan.common.tasks import BINARY, MULTICLASS, MULTILABEL, structures
from fedscan.common.training_settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DpStep:
    """DP parameters of this round.

    ``secure_mode`` uses Opacus' noise sampling that resists floating-point attacks
    and reseeds the noise generator from the OS (``secrets``) before every step.
    (Opacus' own secure RNG needs torchcsprng, which has no build for this torch.)
    """

    noise_multiplier: float
    clip_norm: float
    secure_mode: bool = False


@dataclass(frozen=True)
class Plain:
    """Training without DP: the shape of :class:`~fedscan.common.models.private.Private`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    stage: Stage


@dataclass(frozen=True)
class TrainOutcome:
    """``history``: this round's accountant entries, (noise multiplier, sample rate, steps)."""

    loss: float
    steps: int
    history: list[HistoryEntry]


def train_local(
    model: nn.Module,
    data: ImageSet,
    settings: TrainSettings,
    *,
    dp: DpStep | None,
    device: torch.device,
) -> TrainOutcome:
    """Train ``model`` in place for ``settings.local_epochs`` epochs (DP-SGD when ``dp`` is given).

    Under DP every Poisson-sampled step is taken, empty batches included (a
    pure-noise step), so the steps the accountant counts are the steps released.
    """
    # With DP, sampling and noise draw from the site's own entropy: a seed the
    # coordinator knows would let it predict (and subtract) the noise.
    seed = secrets.randbits(63) if dp is not None else settings.seed
    loader, prepare = training_batches(data, settings, seed, device=device)
    model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.learning_rate, momentum=settings.momentum
    )
    anchor = [p.detach().clone() for p in model.parameters()] if settings.proximal_mu > 0 else None
    if dp is None:
        # Without DP the batch-mean loss over B·K views already is the mean over images of their
        # mean view loss: nothing to do after the backward pass, and no batch is empty.
        plain = Plain(model, optimizer, loader, Stage(lambda: None, lambda: None))
        loss, steps = _run_epochs(plain, settings, anchor, device, prepare)
        return TrainOutcome(loss, steps, [])
    return _train_private(
        model, optimizer, (loader, prepare), settings, anchor, dp=dp, device=device
    )


def scheduled(settings: TrainSettings, server_round: int, rounds: int) -> TrainSettings:
    """The settings of round ``server_round`` of ``rounds``, its learning rate on the run's
    schedule: cosine falls from ``learning_rate`` in round 1 to a tenth of it in the last round
    (and stays there for the cross-site fine-tune after it)."""
    if settings.lr_schedule == "constant" or rounds <= 1:
        return settings
    progress = min(max(server_round - 1, 0), rounds - 1) / (rounds - 1)
    factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return replace(settings, learning_rate=settings.learning_rate * factor)


def _train_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: tuple[torch.utils.data.DataLoader, Callable[[Batch], Batch]],
    settings: TrainSettings,
    anchor: list[torch.Tensor] | None,
    *,
    dp: DpStep,
    device: torch.device,
) -> TrainOutcome:
    """DP-SGD with a fresh accountant whose history is this round's release."""
    mode = get_model_spec(settings.model).grad_sample_mode
    loader, prepare = batches
    with made_private(
        model, optimizer, loader, dp=dp, mode=mode, views=settings.augment_views, device=device
    ) as private:
        loss, steps = _run_epochs(private, settings, anchor, device, prepare)
        return TrainOutcome(loss, steps, private.history())


def _run_epochs(
    run: Private | Plain,
    settings: TrainSettings,
    anchor: list[torch.Tensor] | None,
    device: torch.device,
    prepare: Callable[[Batch], Batch],
) -> tuple[float, int]:
    model, optimizer = run.model, run.optimizer
    criterion = training_loss(
        get_model_spec(settings.model).loss, kind=settings.task, classes=settings.classes
    )
    total_loss, total_seen, steps = 0.0, 0, 0
    amp = mixed_precision(device, private=isinstance(run, Private))
    for epoch in range(1, settings.local_epochs + 1):
        log.info("Training: epoch %s of %s", epoch, settings.local_epochs)
        for images, labels in run.loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            if images.shape[0] == 0:  # Poisson sampling drew no image: a pure-noise DP step
                empty_step(run.stage, optimizer)
                steps += 1
                continue
            images, labels = prepare((images, labels))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = criterion(run.stage.forward(model, images), labels)
            loss.backward()
            run.stage.after_backward()
            optimizer.step()
            if anchor is not None:
                _proximal_step(model, anchor, settings.learning_rate * settings.proximal_mu)
            total_loss += float(loss.item()) * labels.shape[0]
            total_seen += labels.shape[0]
            steps += 1
    return total_loss / max(total_seen, 1), steps


def mixed_precision(device: torch.device, *, private: bool) -> bool:
    """bfloat16 autocast for plain SGD on a GPU that has it. Not under DP: the fused path measures
    each sample's gradient norm and forms the clipped sum in two passes, which in bfloat16 (an
    8-bit mantissa) can differ by ~0.4 %, so a sample could move the update by more than the clip
    norm the accountant assumes."""
    return device.type == "cuda" and not private and torch.cuda.is_bf16_supported()


def training_loss(
    name: str, *, kind: str = BINARY, classes: tuple[str, ...] = ()
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The model's training loss: log-loss on logits, the SVM's hinge loss on margins, or for
    segmentation Dice + pixel log-loss on logit maps (a label map of ``classes`` structures:
    softmax over background and structures, Dice over the structures only); for ``kind``
    multiclass softmax cross-entropy on the class index, for multilabel per-finding log-loss on
    the findings' bits; the SVM's hinge one-vs-rest per class for either.

    Every loss is a mean over the batch of per-image losses, as Opacus' per-sample clipping assumes:
    the Dice term is computed per image (``batch=False``), never over the batch's pooled pixels.
    """
    if name == "hinge":
        from fedscan.common.models.classical_model import hinge_loss, one_vs_rest_hinge

        if kind in (MULTICLASS, MULTILABEL):  # one SVM per class against the rest
            return lambda margins, labels: one_vs_rest_hinge(
                margins, class_targets(labels, kind, len(classes))
            )
        return hinge_loss
    if name == "dice-ce":
        from monai.losses import DiceCELoss

        if structures(kind, classes):
            # Background left out of the Dice term: it covers most of every image, so its Dice
            # is near 1 from the first step and would only dilute the structures' gradient.
            return DiceCELoss(softmax=True, to_onehot_y=True, include_background=False, batch=False)
        return DiceCELoss(sigmoid=True, batch=False)
    if kind == MULTICLASS:
        cross_entropy = nn.CrossEntropyLoss()
        return lambda logits, labels: cross_entropy(logits, labels.long())
    if kind == MULTILABEL:
        # Summed over findings, averaged over images: each image's loss is one term of the
        # batch mean, as Opacus' per-sample clipping assumes.
        per_finding = nn.BCEWithLogitsLoss(reduction="none")
        return lambda logits, labels: (
            per_finding(logits, finding_matrix(labels, len(classes))).sum(dim=1).mean()
        )
    return nn.BCEWithLogitsLoss()


def class_targets(labels: torch.Tensor, kind: str, classes: int) -> torch.Tensor:
    """N×K 0/1 targets: one-hot class indices (multiclass) or the findings' bits (multilabel)."""
    if kind == MULTICLASS:
        return nn.functional.one_hot(labels.long(), classes).float()
    return finding_matrix(labels, classes)


def finding_matrix(labels: torch.Tensor, findings: int) -> torch.Tensor:
    """Multi-label bit sets (N,) → an N×K float matrix of 0/1, column k for finding k."""
    bits = torch.arange(findings, device=labels.device)
    return ((labels.long().unsqueeze(1) >> bits) & 1).float()


@torch.no_grad()
def _proximal_step(model: nn.Module, anchor: list[torch.Tensor], rate: float) -> None:
    # FedProx's term mu/2·||w - w_global||² carries no data, so it is applied as a
    # separate decoupled step after the private update: DP is unaffected.
    for param, start in zip(model.parameters(), anchor, strict=True):
        param.sub_(rate * (param - start.to(param.device)))
