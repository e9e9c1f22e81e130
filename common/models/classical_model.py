"""Linear models on classical features (``hog-svm``, ``lbp-logreg``, …), trained like any fedscan
model.

The model computes its image's features (fixed, no gradient), standardises them
with the buffers ``feature_mean`` / ``feature_scale`` — set once per run from
statistics the sites computed federatedly (sums, sums of squares and counts,
never features) — and applies one ``nn.Linear``. DP-SGD, clipping, the ledger and
aggregation are exactly the CNN's: only the linear layer has parameters.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch
from torch import nn

from fedscan.common.models.classical import ClassicalConfig, feature_pipeline

MEAN_KEY, SCALE_KEY = "feature_mean", "feature_scale"
_CACHE_LIMIT = 200_000  # features kept per process; an image's features never change within a run


class FeatureExtractor:
    """Features of a batch of 1×S×S images in [0, 1], memoised by image content."""

    def __init__(self, kind: str, config: ClassicalConfig) -> None:
        self.transform = feature_pipeline(kind, config)
        self.cache: dict[bytes, np.ndarray] = {}

    def dimension(self, size: int) -> int:
        return int(self.transform(np.zeros((size, size), dtype=np.float32)).shape[0])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().cpu().numpy()
        rows = [self._features(pixels[i, 0]) for i in range(pixels.shape[0])]
        if not rows:
            return torch.zeros((0, self.dimension(images.shape[-1])), dtype=torch.float32)
        return torch.from_numpy(np.stack(rows).astype(np.float32)).to(images.device)

    def _features(self, image: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(
            np.ascontiguousarray(image, dtype=np.float32).tobytes(), digest_size=16
        ).digest()
        if key not in self.cache:
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[key] = np.asarray(self.transform(image.astype(np.float64)), dtype=np.float32)
        return self.cache[key]


@functools.lru_cache(maxsize=8)
def shared_extractor(kind: str, options: str) -> FeatureExtractor:
    """One extractor (and feature cache) per setting in a process: every round's fresh model reuses
    it."""
    return FeatureExtractor(kind, ClassicalConfig.parse(options))


class FeatureClassifier(nn.Module):
    """Standardised features → one logit (the SVM's margin or the logistic regression's
    log-odds), or one per class (``outputs`` K > 1): one linear model per class on the same
    features."""

    def __init__(self, kind: str, *, input_size: int, options: str = "", outputs: int = 1) -> None:
        super().__init__()
        self.extractor = shared_extractor(kind, options)
        dimension = self.extractor.dimension(input_size)
        self.register_buffer(MEAN_KEY, torch.zeros(dimension))
        self.register_buffer(SCALE_KEY, torch.ones(dimension))
        self.linear = nn.Linear(dimension, outputs)
        self.outputs = outputs
        nn.init.zeros_(self.linear.weight)  # a linear model needs no symmetry breaking
        nn.init.zeros_(self.linear.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean, scale = self.get_buffer(MEAN_KEY), self.get_buffer(SCALE_KEY)
        standardised = (self.features(images) - mean) / scale
        logits = self.linear(standardised)
        return logits.squeeze(1) if self.outputs == 1 else logits


def one_vs_rest_hinge(margins: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """K linear SVMs at once, ``targets`` an N×K 0/1 matrix: each class's hinge loss, summed over
    classes and averaged over images (one term per image, as Opacus' per-sample clipping
    assumes)."""
    return torch.clamp(1.0 - (2.0 * targets - 1.0) * margins, min=0.0).sum(dim=1).mean()


def hinge_loss(margins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The linear SVM's loss, labels in {0, 1}: mean of max(0, 1 − y·f) with y = ±1."""
    return torch.clamp(1.0 - (2.0 * labels - 1.0) * margins, min=0.0).mean()
