"""What a site's training loop iterates over: shuffled batches of its training set, and the step
that makes a loaded batch a training batch (views one per row; on the device path, augmentation).

Invariant: either path yields each image's views as consecutive rows with the image's label
repeated, the layout the per-sample clipper averages over; the shuffle and, without DP, the
augmentation follow the caller's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedscan.common.data.augment import TrainingSet
from fedscan.common.data.batch_augment import BatchAugment, DeviceSet, as_batch, holding_device
from fedscan.common.data.imageset import ImageSet
from fedscan.common.defaults import AUGMENT_DEVICE
from fedscan.common.models.registry import get_model_spec
from fedscan.common.tasks import MULTICLASS, MULTILABEL
from fedscan.common.training_settings import TrainSettings

# Batched is faster on both devices: 2 CPU threads, 5 epochs of 237 images, DP (fused) 2.5 s
# against 3.6 s a round for the U-Net, 1.3 s against 2.1 s for small-cnn (bench/site_training.py,
# median of 3). The loader's per-image path is the reference the batched one is tested against.
Batch = tuple[torch.Tensor, torch.Tensor]


def training_batches(
    data: ImageSet,
    settings: TrainSettings,
    seed: int,
    *,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, Callable[[Batch], Batch]]:
    """Shuffled batches of (image, label), or (image, mask) for segmentation, augmented unless the
    model is classical (it trains on fixed features of the images as they are, and caches them),
    and what makes a loaded batch a training batch: its views laid out one per row, and on the
    device path its augmentation (``settings.augment_on``; any other value is the loader's)."""
    spec = get_model_spec(settings.model)
    form = _Form(
        augment=settings.augment and not spec.classical,
        segmentation=spec.task == "segmentation",
        integer_labels=settings.task in (MULTICLASS, MULTILABEL),
    )
    generator = torch.Generator().manual_seed(seed)
    if settings.augment_on == AUGMENT_DEVICE:
        return _device_batches(data, settings, form, seed, generator, device)
    dataset = TrainingSet(
        data,
        augment=form.augment,
        seed=seed % 2**32,
        segmentation=form.segmentation,
        integer_labels=form.integer_labels,
        intensity=settings.augment_intensity,
        views=settings.augment_views,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, generator=generator
    )
    return loader, _views_as_rows if settings.augment_views > 1 else _unchanged


@dataclass(frozen=True)
class _Form:
    """What a training batch is: augmented or not, (image, mask) pairs, integer labels."""

    augment: bool
    segmentation: bool
    integer_labels: bool


def _device_batches(
    data: ImageSet,
    settings: TrainSettings,
    form: _Form,
    seed: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.utils.data.DataLoader, Callable[[Batch], Batch]]:
    """Batches gathered from the data held on (or, too big, beside) the training device, and
    augmented there as whole batches."""
    held = DeviceSet(
        data,
        segmentation=form.segmentation,
        integer_labels=form.integer_labels,
        device=holding_device(data, device),
    )
    loader = torch.utils.data.DataLoader(
        held, settings.batch_size, shuffle=True, generator=generator, collate_fn=as_batch
    )
    if not form.augment:
        return loader, _unchanged
    batched = BatchAugment(
        seed=seed % 2**63,
        device=device,
        segmentation=form.segmentation,
        intensity=settings.augment_intensity,
        views=settings.augment_views,
    )
    return loader, lambda batch: batched(*batch)


def _unchanged(batch: Batch) -> Batch:
    return batch


def _views_as_rows(batch: Batch) -> Batch:
    """B×K×… views from the loader → B·K images, each view its image's label."""
    images, labels = batch
    return images.flatten(0, 1), labels.repeat_interleave(images.shape[1])
