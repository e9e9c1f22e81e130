"""What ingestion hands to training: the accepted samples of a site, in path order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Samples:
    """N×C×S×S images in [0, 1], labels, the patient group and local key of each sample (local
    only); for segmentation N×1×S×S masks in {0, 1}, or 0..K for a label map (and each label
    says whether its mask marks anything). Images (and masks) may be read-only memory maps of the
    packed store: index them (which copies) rather than write to them."""

    images: np.ndarray
    labels: np.ndarray
    groups: tuple[str, ...]
    keys: tuple[str, ...] = ()
    masks: np.ndarray | None = None
