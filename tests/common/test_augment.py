"""Intensity augmentation: another scanner's look, the same label, reproducible without DP."""

from __future__ import annotations

import torch

from fedscan.common.data.augment import TrainingSet
from fedscan.common.data.imageset import ImageSet
from fedscan.common.training_settings import TrainSettings


def _images() -> ImageSet:
    ramp = torch.linspace(0, 1, 64).expand(64, 64)
    return ImageSet(ramp.expand(16, 1, 64, 64).clone(), torch.arange(16) % 2)


def test_intensity_augmentation_varies_the_look_stays_in_range_and_repeats_by_seed() -> None:
    # Execute
    sets = [
        TrainingSet(_images(), augment=True, seed=5, intensity=True),
        TrainingSet(_images(), augment=True, seed=5, intensity=True),
        TrainingSet(_images(), augment=True, seed=5),
    ]
    first, again, affine = ([data[i] for i in range(16)] for data in sets)
    # Assert
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert all(0 <= float(image.min()) and float(image.max()) <= 1 for image, _ in first)
    assert [float(label) for _, label in first] == [float(i % 2) for i in range(16)]
    changed = sum(not torch.allclose(a[0], b[0]) for a, b in zip(first, affine, strict=True))
    assert changed >= 8  # each transform has its own probability: most images change
    means = torch.stack([image.mean() for image, _ in first])
    assert float(means.max() - means.min()) > 0.05  # brightness and gamma differ between draws


def test_it_is_a_setting_off_by_default_and_only_with_augment() -> None:
    assert TrainSettings().augment_intensity is False
    plain = TrainingSet(_images(), augment=False, seed=5, intensity=True)
    assert torch.equal(plain[3][0], _images().images[3])
