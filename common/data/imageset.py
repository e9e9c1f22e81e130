"""What a site trains and validates on, as tensors: the core types every other package passes
around.

Invariant: an ImageSet's images, labels, keys and masks describe the same samples in the same order;
the keys (relative paths) stay at the site — they are for its own audit and never leave it. Imports
torch only: metrics and training use these types without pulling in decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedscan.common.errors import DataError


@dataclass(frozen=True)
class ImageSet:
    """Images (N×1×S×S float32 in [0, 1]), binary labels (N, int64), and optionally each image's
    local key (relative path, ``#frame`` for multi-frame files) — for the site's own audit only.
    Segmentation: ``masks`` N×1×S×S in {0, 1}, and each label says whether the mask marks
    anything."""

    images: torch.Tensor
    labels: torch.Tensor
    keys: tuple[str, ...] = ()
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def require_masks(self) -> torch.Tensor:
        """The masks (segmentation); a DataError when these images were loaded without them."""
        if self.masks is None:
            raise DataError(
                "Segmentation needs masks, and these images have none; load the site with masks."
            )
        return self.masks


@dataclass(frozen=True)
class SiteData:
    """What one site trains and validates on, plus its ingestion report."""

    train: ImageSet
    val: ImageSet
    rejected: dict[str, int] = field(default_factory=dict)
