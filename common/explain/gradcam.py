"""Grad-CAM and Grad-CAM++ maps of a classifier, per class, from MONAI's implementations.

Invariants: the caller's model is never modified — MONAI registers hooks it never removes, so the
maps are computed on a deep copy; each map is ReLU'd, upsampled to the input's size and scaled to a
maximum of 1 (an all-zero map stays zero: the class has no positive evidence at that layer). MONAI's
own post-processing (min-max scaling that flips the map) is replaced by this one.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from fedscan.common.explain.settings import GRADCAM_PP
from fedscan.common.explain.targets import ClassScores

log = logging.getLogger(__name__)


def unit_max(maps: np.ndarray) -> np.ndarray:
    """Each H × W map (the last two axes) clipped at 0 and divided by its maximum (0 stays 0)."""
    positive = np.clip(np.nan_to_num(maps.astype(np.float32)), 0.0, None)
    peaks = positive.max(axis=(-2, -1), keepdims=True)
    return np.divide(positive, peaks, out=np.zeros_like(positive), where=peaks > 0)


def gradcam_maps(
    scores: ClassScores,
    images: torch.Tensor,
    *,
    layer: str,
    classes: int,
    method: str,
    batch_size: int,
) -> np.ndarray:
    """N × K maps of ``images`` (N × 1 × H × W), one per class score of ``scores``."""
    from monai.visualize import GradCAM, GradCAMpp

    wrapped = copy.deepcopy(scores).eval()
    kind = GradCAMpp if method == GRADCAM_PP else GradCAM
    cam = kind(nn_module=wrapped, target_layers=layer, postprocessing=lambda x: x)
    out = np.zeros((len(images), classes, *images.shape[2:]), dtype=np.float32)
    # MONAI 1.6.1's Grad-CAM++ multiplies the (N,) class scores into N × C × H × W gradients,
    # which broadcasts along the width: only one image at a time gives the paper's map.
    batch_size = 1 if method == GRADCAM_PP else batch_size
    device = next(wrapped.parameters()).device
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        for k in range(classes):
            found = cam(batch, class_idx=k)
            out[start : start + len(batch), k] = found[:, 0].detach().cpu().numpy()
    log.debug("%s maps of %s images × %s classes", method, len(images), classes)
    return unit_max(out)


def as_scores(model: nn.Module, kind: str) -> ClassScores:
    """``model`` wrapped so that Grad-CAM and occlusion see N × K class scores."""
    return ClassScores(model, kind)
