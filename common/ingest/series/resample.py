"""A planned series' voxels → the model's input: canonical patient frame, voxel spacing, size.

Three steps, each checked against the plan's geometry rather than assumed: (1) flip and transpose
to the canonical frame (:mod:`~fedscan.common.ingest.series.geometry`); (2) centre-crop to the
field of view the model's input covers, so resampling never allocates more than the input plus a
voxel per axis; (3) resample to the model's voxel spacing (MONAI ``Resize``, trilinear with
anti-aliasing for images; a per-label vote for masks, so a mask only ever holds labels it had),
then pad or crop to the input size (MONAI ``ResizeWithPadOrCrop``, centred, padding 0 — air after
the intensity policy). Torch and MONAI are imported only here, on a cache miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedscan.common.ingest.series.geometry import SeriesPlan


@dataclass(frozen=True)
class VolumeInput:
    """A 3-D model's input: ``depth`` × ``side`` × ``side`` voxels of ``voxel_mm`` (isotropic)."""

    depth: int
    side: int
    voxel_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.depth, self.side, self.side


def to_canonical(volume: np.ndarray, plan: SeriesPlan) -> np.ndarray:
    """Volume axes (slice, row, column) → canonical (z, y, x), from the plan's axis map."""
    for axis, flipped in enumerate(plan.flips):
        if flipped:
            volume = np.flip(volume, axis=axis)
    order = [plan.axes.index(2 - out) for out in range(3)]
    return np.ascontiguousarray(volume.transpose(order))


def fit_image(volume: np.ndarray, spacing: tuple[float, float, float], target: VolumeInput):
    """Canonical image (values in [0, 1]) → 1×D×S×S float32 at the target spacing."""
    return _fit(volume.astype(np.float32), spacing, target, mode="trilinear")


def fit_labels(
    labels: np.ndarray, spacing: tuple[float, float, float], target: VolumeInput, structures: int
) -> np.ndarray:
    """Canonical mask (0..K integers; K = 1 for a binary mask) → 1×D×S×S float32 labels, each
    output voxel taking the label that covers most of it."""
    import torch

    count = max(structures, 1) + 1
    onehot = np.eye(count, dtype=np.float32)[labels.astype(np.int64)]  # z×y×x×(K+1)
    channels = np.moveaxis(onehot, -1, 0)
    votes = np.stack([_fit(c, spacing, target, mode="trilinear")[0] for c in channels])
    return torch.from_numpy(votes).argmax(dim=0, keepdim=True).float().numpy()


def _fit(
    volume: np.ndarray, spacing: tuple[float, float, float], target: VolumeInput, *, mode: str
) -> np.ndarray:
    import torch
    from monai.transforms import Resize, ResizeWithPadOrCrop

    volume = _crop_to_view(volume, spacing, target)
    shape = tuple(
        max(1, round(n * s / target.voxel_mm)) for n, s in zip(volume.shape, spacing, strict=True)
    )
    resize = Resize(shape, mode=mode, anti_aliasing=True)
    pad = ResizeWithPadOrCrop(target.shape, mode="constant")
    with torch.no_grad():
        resized = resize(torch.from_numpy(np.ascontiguousarray(volume))[None])
        fitted = torch.as_tensor(pad(resized))
    return np.ascontiguousarray(fitted.numpy(), dtype=np.float32)


def _crop_to_view(
    volume: np.ndarray, spacing: tuple[float, float, float], target: VolumeInput
) -> np.ndarray:
    """Centre-crop each axis to the millimetres the target covers (plus one voxel)."""
    slices = []
    for n, s, wanted in zip(volume.shape, spacing, target.shape, strict=True):
        keep = min(n, math.ceil(wanted * target.voxel_mm / s) + 1)
        start = (n - keep) // 2
        slices.append(slice(start, start + keep))
    return volume[tuple(slices)]
