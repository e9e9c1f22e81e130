"""What a decoder returns for one file, shared by the DICOM and raster decoders (no torch, no
pydicom)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decoded:
    """``frames``: F×C×H×W float32 in [0, 1]; ``header``: identity and acquisition facts (local
    only)."""

    frames: np.ndarray
    header: dict[str, Any]
