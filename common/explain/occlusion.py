"""Occlusion sensitivity (Zeiler & Fergus 2014), exact and small: how much each class's score
falls when a square patch of the image is replaced by the image's mean.

Invariants: a pixel's value is the mean score drop over every patch that covers it — patches start
every ``stride`` pixels and the last one in each direction is moved to touch the border, so every
pixel is covered at least once; only drops are evidence (rises are clipped to 0), and each map is
scaled to a maximum of 1 as Grad-CAM's are. Deterministic: no sampling, no randomness.
"""

from __future__ import annotations

import numpy as np
import torch

from fedscan.common.explain.gradcam import unit_max
from fedscan.common.explain.targets import ClassScores


def patch_starts(side: int, patch: int, stride: int) -> list[int]:
    """Where patches start along one axis of ``side`` pixels (the last one ends at the border)."""
    if patch >= side:
        return [0]
    starts = list(range(0, side - patch + 1, stride))
    return starts if starts[-1] == side - patch else [*starts, side - patch]


@torch.no_grad()
def occlusion_map(
    scores: ClassScores, image: torch.Tensor, *, patch: int, stride: int, batch_size: int
) -> np.ndarray:
    """K × H × W drops of one ``image`` (1 × H × W) under every occluding patch, before scaling."""
    _, height, width = image.shape
    corners = [
        (top, left)
        for top in patch_starts(height, patch, stride)
        for left in patch_starts(width, patch, stride)
    ]
    base = scores(image[None])[0]
    fill = image.mean()
    drops = []
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        copies = image[None].repeat(len(chunk), 1, 1, 1)
        for index, (top, left) in enumerate(chunk):
            copies[index, :, top : top + patch, left : left + patch] = fill
        drops.append(base[None] - scores(copies))
    drop = torch.cat(drops).double().cpu().numpy()  # P × K
    total = np.zeros((drop.shape[1], height, width))
    covered = np.zeros((height, width))
    for (top, left), row in zip(corners, drop, strict=True):
        total[:, top : top + patch, left : left + patch] += row[:, None, None]
        covered[top : top + patch, left : left + patch] += 1
    return total / covered


def occlusion_maps(
    scores: ClassScores, images: torch.Tensor, *, patch: int, stride: int, batch_size: int
) -> np.ndarray:
    """N × K occlusion maps of ``images`` (N × 1 × H × W), each scaled to a maximum of 1."""
    scores = scores.eval()
    device = next(scores.parameters()).device
    maps = [
        occlusion_map(scores, image.to(device), patch=patch, stride=stride, batch_size=batch_size)
        for image in images
    ]
    empty = np.zeros((0, 1, *images.shape[2:]), dtype=np.float32)
    return unit_max(np.stack(maps)) if maps else empty
