"""Augmentation of whole batches where the batch lives (a GPU site's device), and the site's
training data held there once per run.

Per image in the loader (:mod:`fedscan.common.data.augment`) MONAI resamples one image at a time
on the CPU: on an H100 the DP step with augmentation took as long as on CPU (126 ms), the loader
being the bottleneck. Here one batched affine grid (``affine_grid`` + ``grid_sample``) moves every
image of a batch at once, on the batch's device, and the scanner-like intensity changes are
batched tensor operations too.

Invariants:
- the same transforms with the same ranges and probabilities as the loader's (``AFFINE_2D``,
  ``AFFINE_3D``, ``INTENSITY``): a random affine with probability 0.7 per image; for
  segmentation one affine moves an image and its mask together, the mask by nearest neighbour;
  intensity changes (classification only) each with its own probability, clamped to [0, 1];
- with ``views`` K > 1 each image becomes K consecutive, independently augmented views and its
  label is repeated K times, the layout the per-sample clipper averages over;
- every random draw comes from one generator on the batch's device, seeded by the caller (under DP
  the site's own entropy); an image not drawn for a transform is returned unchanged, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

from fedscan.common.data.augment import AFFINE_2D, AFFINE_3D, INTENSITY
from fedscan.common.data.imageset import ImageSet

_TRUNCATE = 4.0  # MONAI truncates its Gaussian at 4 σ (σ ≤ 1 → 9 taps)


class DeviceSet(torch.utils.data.Dataset):
    """A site's training images and targets (labels, or masks for segmentation) on ``device``,
    copied there once; a batch is one gather on the device (``__getitems__``), not one Python call
    per image. Pair with :func:`as_batch` as the loader's collate function."""

    def __init__(
        self, data: ImageSet, *, segmentation: bool, integer_labels: bool, device: torch.device
    ) -> None:
        self.images = data.images.to(device=device, dtype=torch.float32)
        if segmentation:
            self.targets = data.require_masks().to(device=device, dtype=torch.float32)
        else:
            labels = data.labels.to(device)
            # Multiclass and multilabel labels stay integers (a bit set of findings).
            self.targets = labels if integer_labels else labels.float()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return self.images[rows], self.targets[rows]


def holding_device(data: ImageSet, device: torch.device) -> torch.device:
    """Where a site's training set is held for a round: on a CUDA device when its float32 images
    (and masks) take at most a quarter of the device's free memory, the rest left for the model,
    its activations and per-sample gradients; otherwise in host memory, each batch moved when
    drawn. A CPU site holds it where it is."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    pixels = data.images.numel() + (data.masks.numel() if data.masks is not None else 0)
    return device if 4 * pixels <= free // 4 else torch.device("cpu")


def as_batch(batch: Any) -> Any:
    """The loader's collate function for a :class:`DeviceSet`: its gather already is the batch,
    (images, targets) (an empty Poisson draw gathers 0 rows of the right shape)."""
    return batch


class BatchAugment:
    """``(images, targets) → (images, targets)`` for one batch, augmented on its device."""

    def __init__(
        self, *, seed: int, device: torch.device, segmentation: bool, intensity: bool, views: int
    ) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.segmentation, self.intensity, self.views = segmentation, intensity, views

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.views > 1:
            images = images.repeat_interleave(self.views, dim=0)
            targets = targets.repeat_interleave(self.views, dim=0)
        if images.shape[0] == 0:
            return images, targets
        grid = functional.affine_grid(
            self._affines(images), list(images.shape), align_corners=False
        )
        moved = self._draw(images.shape[0]) < _affine_ranges(images)["prob"]
        images = _where(moved, _resample(images, grid, "bilinear"), images)
        if self.segmentation:
            targets = _where(moved, _resample(targets, grid, "nearest"), targets)
        elif self.intensity:
            images = self._intensities(images).clamp(0, 1)
        return images, targets

    def _draw(self, count: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """``count`` uniform draws in [low, high) from this batch's generator."""
        device = self.generator.device
        draws = torch.rand(count, generator=self.generator, device=device)
        return low + (high - low) * draws

    def _affines(self, images: torch.Tensor) -> torch.Tensor:
        """N×d×(d+1) matrices from an output pixel's normalised coordinates (x first) to where it
        is read: a turn in the (y, x) plane, a scale per axis and a shift in pixels."""
        count, spatial = images.shape[0], images.shape[2:]
        dims, ranges = len(spatial), _affine_ranges(images)
        turn = ranges["rotate_range"]
        turn = turn[0] if isinstance(turn, tuple) else turn  # volumes turn in the (y, x) plane
        angle = self._draw(count, -turn, turn)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(count, dims, dims + 1, device=images.device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        if dims == 3:
            theta[:, 2, 2] = 1.0
        scale = torch.stack(
            [self._draw(count, 1 - step, 1 + step) for step in reversed(ranges["scale_range"])], 1
        )
        theta[:, :, :dims] = theta[:, :, :dims] * scale.unsqueeze(1)
        # Axis order x, y(, z) is the reverse of the tensor's; a shift of t pixels along an axis
        # of n pixels is 2t/n in normalised coordinates.
        shifts = ranges["translate_range"]
        for axis, (pixels, size) in enumerate(
            zip(reversed(shifts), reversed(spatial), strict=True)
        ):
            theta[:, axis, dims] = self._draw(count, -pixels, pixels) * 2 / size
        return theta

    def _intensities(self, images: torch.Tensor) -> torch.Tensor:
        """The loader's scanner-like chain, batched: gamma contrast, contrast about the mean,
        brightness shift, Gaussian noise, blur; each image drawn for each with its probability."""
        count = images.shape[0]
        (p_gamma, gamma), (p_contrast, contrast) = INTENSITY["gamma"], INTENSITY["contrast"]
        (p_bright, bright), (p_noise, noise) = INTENSITY["brightness"], INTENSITY["noise"]
        flat = images.flatten(1)
        low, high = flat.min(1).values, flat.max(1).values
        low, span = _per_image(low, images), _per_image(high - low, images)
        power = _per_image(self._draw(count, *gamma), images)
        adjusted = ((images - low) / (span + 1e-7)) ** power * span + low
        images = _where(self._draw(count) < p_gamma, adjusted, images)
        mean = _per_image(images.flatten(1).mean(1), images)
        factor = _per_image(self._draw(count, 1 - contrast, 1 + contrast), images)
        images = _where(self._draw(count) < p_contrast, (images - mean) * factor + mean, images)
        shift = _per_image(self._draw(count, -bright, bright), images)
        images = _where(self._draw(count) < p_bright, images + shift, images)
        sigma = _per_image(self._draw(count, 0.0, noise), images)
        draws = torch.randn(
            images.shape, generator=self.generator, device=images.device, dtype=images.dtype
        )
        images = _where(self._draw(count) < p_noise, images + draws * sigma, images)
        p_blur, _ = INTENSITY["blur"]
        return _where(self._draw(count) < p_blur, self._blurred(images), images)

    def _blurred(self, images: torch.Tensor) -> torch.Tensor:
        """Each image blurred along its two in-plane axes, σ 0.25–1 pixel drawn per image and
        axis; zero padding, as MONAI's Gaussian filter."""
        count, channels = images.shape[0], images.shape[1]
        low, high = INTENSITY["blur"][1]
        radius = int(_TRUNCATE * high + 0.5)
        taps = torch.arange(-radius, radius + 1, device=images.device)
        spatial = images.shape[2:]
        stacked = images.reshape(1, count * channels, *spatial)
        for axis in (-1, -2):
            sigma = self._draw(count, low, high).repeat_interleave(channels)
            kernel = torch.exp(-(taps.float() ** 2).unsqueeze(0) / (2 * sigma.unsqueeze(1) ** 2))
            kernel = kernel / kernel.sum(1, keepdim=True)
            shape = [count * channels, 1] + [1] * len(spatial)
            shape[axis] = taps.numel()
            padding = [0] * len(spatial)
            padding[axis] = radius
            convolve = functional.conv3d if len(spatial) == 3 else functional.conv2d
            stacked = convolve(
                stacked, kernel.reshape(shape), padding=tuple(padding), groups=count * channels
            )
        return stacked.reshape(images.shape)


def _affine_ranges(images: torch.Tensor) -> dict[str, Any]:
    """The loader's affine ranges for these images: volumes (N×1×D×S×S) or 2-D images."""
    return AFFINE_3D if images.ndim == 5 else AFFINE_2D


def _resample(tensor: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    # Border padding, as the loader's: the edge pixels extend, no black wedge enters the image.
    return functional.grid_sample(
        tensor, grid, mode=mode, padding_mode="border", align_corners=False
    )


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) → N×1×…×1, broadcastable against ``like``."""
    return values.reshape(-1, *[1] * (like.ndim - 1))


def _where(chosen: torch.Tensor, changed: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Per image: ``changed`` where drawn, else ``kept`` unchanged."""
    return torch.where(_per_image(chosen, kept), changed, kept)
