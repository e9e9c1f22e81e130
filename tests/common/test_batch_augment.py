"""Augmentation batched on the training device (GPU sites): the loader's transforms and ranges,
masks moved with their images, views laid out for the clipper, and training through it, here on
the CPU (the same code runs on CUDA)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedscan.common.data.augment import TrainingSet
from fedscan.common.data.batch_augment import BatchAugment, DeviceSet, as_batch
from fedscan.common.data.imageset import ImageSet
from fedscan.common.defaults import AUGMENT_DEVICE, AUGMENT_LOADER
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.training_settings import TrainSettings

CPU = torch.device("cpu")


def _spots(count: int, size: int = 32) -> torch.Tensor:
    """Each image a bright 4×4 square at the centre, on a dark ground."""
    images = torch.zeros(count, 1, size, size)
    middle = size // 2
    images[:, :, middle - 2 : middle + 2, middle - 2 : middle + 2] = 1.0
    return images


def _centres(images: torch.Tensor) -> torch.Tensor:
    """Each image's intensity-weighted centre (row, column), N×2."""
    size = images.shape[-1]
    axis = torch.arange(size, dtype=torch.float32)
    weights = images[:, 0]
    total = weights.sum((1, 2))
    rows = (weights.sum(2) * axis).sum(1) / total
    cols = (weights.sum(1) * axis).sum(1) / total
    return torch.stack([rows, cols], 1)


def _augmenter(**changes: object) -> BatchAugment:
    options: dict = {"seed": 3, "device": CPU, "segmentation": False, "intensity": False}
    options.update({"views": 1, **changes})
    return BatchAugment(**options)


def test_batched_affine_moves_images_as_the_loaders_monai_affine_does() -> None:
    # Arrange
    count = 600
    spots = _spots(count)
    loader = TrainingSet(ImageSet(spots, torch.zeros(count)), augment=True, seed=3)
    # Execute
    monai = torch.stack([loader[i][0] for i in range(count)])
    batched, _ = _augmenter()(spots, torch.zeros(count))
    # Assert: the same share of images moved, the same spread of shifts, the same bound
    start = _centres(spots)
    shifts = {name: _centres(out) - start for name, out in (("monai", monai), ("batched", batched))}
    moved = {name: float((s.abs().sum(1) > 1e-3).float().mean()) for name, s in shifts.items()}
    assert moved["batched"] == pytest.approx(0.7, abs=0.06)
    assert moved["monai"] == pytest.approx(0.7, abs=0.06)
    spread = {name: s.abs().mean(0) for name, s in shifts.items()}
    assert torch.allclose(spread["batched"], spread["monai"], rtol=0.2)
    assert float(shifts["batched"].abs().max()) <= 3.3  # ±3 px shift; the spot sits at the centre


def test_not_drawn_images_are_returned_bit_for_bit_and_a_seed_repeats() -> None:
    # Arrange
    images = torch.rand(64, 1, 32, 32)
    # Execute
    first, _ = _augmenter()(images, torch.zeros(64))
    again, _ = _augmenter()(images, torch.zeros(64))
    other, _ = _augmenter(seed=4)(images, torch.zeros(64))
    # Assert
    kept = (first == images).flatten(1).all(1)
    assert 5 <= int(kept.sum()) <= 35  # probability 0.7 of an affine: ~19 of 64 kept
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_mask_moves_with_its_image_by_nearest_neighbour() -> None:
    # Arrange: each image is its own mask, so they must still agree after the move
    masks = (torch.rand(32, 1, 32, 32) > 0.7).float()
    masks[:, :, 8:24, 8:24] = 1.0
    # Execute
    images, moved = _augmenter(segmentation=True)(masks.clone(), masks.clone())
    # Assert
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    agree = ((images > 0.5).float() == moved).float().mean()
    assert float(agree) >= 0.97
    assert not torch.equal(moved, masks)


def test_views_are_consecutive_rows_each_with_the_images_label() -> None:
    # Execute
    images, labels = _augmenter(views=3)(torch.rand(8, 1, 32, 32), torch.arange(8).float())
    # Assert
    assert images.shape == (24, 1, 32, 32)
    assert labels.tolist() == [float(i) for i in range(8) for _ in range(3)]
    views = images.reshape(8, 3, -1)
    assert sum(not torch.equal(v[0], v[1]) for v in views) >= 5  # each view its own draw


def test_intensity_changes_stay_in_range_and_vary_like_the_loaders() -> None:
    # Arrange
    count = 400
    ramp = torch.linspace(0, 1, 32).expand(count, 1, 32, 32).clone()
    loader = TrainingSet(ImageSet(ramp, torch.zeros(count)), augment=True, seed=3, intensity=True)
    # Execute
    monai = torch.stack([loader[i][0] for i in range(count)])
    batched, _ = _augmenter(intensity=True)(ramp, torch.zeros(count))
    # Assert
    assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
    spread = {name: out.mean((1, 2, 3)).std() for name, out in (("m", monai), ("b", batched))}
    assert float(spread["b"]) == pytest.approx(float(spread["m"]), rel=0.25)


def test_volumes_move_by_at_most_one_slice_along_z() -> None:
    # Arrange: one bright slice in the middle of each 9-slice volume
    volumes = torch.zeros(200, 1, 9, 16, 16)
    volumes[:, :, 4] = 1.0
    # Execute
    moved, _ = _augmenter()(volumes, torch.zeros(200))
    # Assert
    depth = torch.arange(9, dtype=torch.float32)
    weights = moved[:, 0].sum((2, 3))
    centre = (weights * depth).sum(1) / weights.sum(1)
    assert float((centre - 4).abs().max()) <= 1.1
    assert float((centre - 4).abs().max()) > 0.2


def test_the_device_set_serves_batches_by_one_gather_and_empty_draws() -> None:
    # Arrange
    data = ImageSet(torch.rand(10, 1, 8, 8), torch.arange(10) % 2)
    held = DeviceSet(data, segmentation=False, integer_labels=False, device=CPU)
    # Execute
    images, labels = as_batch(held.__getitems__([3, 1]))
    empty, none = held.__getitems__([])
    # Assert
    assert torch.equal(images, data.images[[3, 1]])
    assert labels.dtype == torch.float32 and labels.tolist() == [1.0, 1.0]
    assert empty.shape == (0, 1, 8, 8) and none.shape == (0,)


def _settings(**changes: object) -> TrainSettings:
    return TrainSettings(**{"local_epochs": 1, "batch_size": 8, "seed": 7, **changes})


def _site_data(count: int = 32) -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(count, 1, 28, 28, generator=generator), torch.arange(count) % 2)


def test_without_augmentation_the_device_path_trains_what_the_loader_path_trains() -> None:
    # Arrange: the same seeded shuffle, so the same batches on both paths
    settings = _settings(augment=False)
    models = [build_model("small-cnn", seed=1) for _ in range(2)]
    # Execute
    for model, place in zip(models, (AUGMENT_LOADER, AUGMENT_DEVICE), strict=True):
        placed = replace(settings, augment_on=place)
        train_local(model, _site_data(), placed, dp=None, device=CPU)
    # Assert
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["fused", "hooks"])
def test_dp_training_with_device_augmentation_and_views_takes_every_poisson_step(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    from fedscan.common.models import registry

    spec = registry.MODELS["small-cnn"]
    monkeypatch.setitem(registry.MODELS, "small-cnn", replace(spec, grad_sample_mode=mode))
    settings = _settings(augment=True, augment_views=2, augment_intensity=True, local_epochs=2)
    dp = DpStep(noise_multiplier=1.0, clip_norm=1.0)
    model = build_model("small-cnn", seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    # Execute
    outcome = train_local(model, _site_data(), settings, dp=dp, device=CPU)
    # Assert: 4 Poisson steps an epoch (32 images, expected batch 8), all counted and released
    assert outcome.steps == 8
    assert [entry[2] for entry in outcome.history] == [8]
    assert torch.isfinite(torch.tensor(outcome.loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_segmentation_trains_on_the_device_path_with_its_masks() -> None:
    # Arrange
    masks = torch.zeros(16, 1, 32, 32)
    masks[:, :, 10:20, 10:20] = 1.0
    data = ImageSet(masks * 0.8 + 0.1, torch.ones(16, dtype=torch.long), masks=masks)
    settings = _settings(model="unet", augment=True)
    # Execute
    outcome = train_local(build_model("unet", seed=1), data, settings, dp=None, device=CPU)
    # Assert
    assert outcome.steps == 2 and torch.isfinite(torch.tensor(outcome.loss))


def test_the_place_is_a_run_setting_device_by_default_and_checked() -> None:
    # Arrange
    from fedscan.common.config import RunConfig
    from fedscan.common.errors import ConfigError

    # Execute / Assert
    assert TrainSettings().augment_on == AUGMENT_DEVICE
    assert RunConfig.from_flat({"augment-on": "loader"}).train.augment_on == AUGMENT_LOADER
    with pytest.raises(ConfigError, match="augment-on 'gpu'; use one of device, loader"):
        RunConfig.from_flat({"augment-on": "gpu"})


def test_mixed_precision_is_for_plain_sgd_on_a_gpu_and_trains_in_float32_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: the GPU's decision forced on the CPU, whose autocast has bfloat16 too
    from fedscan.common.models import training

    assert not training.mixed_precision(CPU, private=False)
    assert not training.mixed_precision(torch.device("cuda"), private=True)
    full = build_model("small-cnn", seed=1)
    train_local(full, _site_data(), _settings(), dp=None, device=CPU)
    monkeypatch.setattr(training, "mixed_precision", lambda device, *, private: not private)
    model = build_model("small-cnn", seed=1)
    # Execute
    outcome = train_local(model, _site_data(), _settings(), dp=None, device=CPU)
    # Assert: bfloat16 took part (other rounding), the weights stay float32 and close
    assert torch.isfinite(torch.tensor(outcome.loss))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    pairs = list(zip(model.parameters(), full.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert all(torch.allclose(a, b, atol=0.05) for a, b in pairs)


def test_a_site_set_too_big_for_a_quarter_of_free_gpu_memory_stays_in_host_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: 10 images of 8×8 float32 are 2 560 bytes
    from fedscan.common.data.batch_augment import holding_device

    data = ImageSet(torch.rand(10, 1, 8, 8), torch.zeros(10))
    gpu = torch.device("cuda")
    # Execute / Assert
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * 2560, 10**9))
    assert holding_device(data, gpu) == gpu
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * 2560 - 4, 10**9))
    assert holding_device(data, gpu) == CPU
    assert holding_device(data, CPU) == CPU
