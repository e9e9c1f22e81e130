"""PNG and JPEG images (sites that export to common formats), decoded with Pillow.

Sizes are read from the header and checked before the pixels are loaded.
Intensities are divided by the format's maximum (255 or 65535): a PNG has no
window, so the bit depth is the only explicit scale it carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedscan.common.errors import Rejected
from fedscan.common.ingest.decoded import Decoded
from fedscan.common.ingest.rejections import Reason

if TYPE_CHECKING:
    from fedscan.common.ingest.dicom_header import DecodeLimits

RASTER_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_BT601 = np.array([0.299, 0.587, 0.114])
_GRAY_SCALES = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0}


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an H×W×3 image in [0, 1]."""
    return (rgb @ _BT601).astype(np.float32)


def decode_raster(path: Path, *, channels: int, limits: DecodeLimits) -> Decoded:
    try:
        with Image.open(path) as image:
            _check_size(image, limits)
            pixels = _to_unit(image)
            facts = {
                "format": image.format or "",
                "Rows": image.height,
                "Columns": image.width,
                "NumberOfFrames": 1,
                "PhotometricInterpretation": image.mode,
            }
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        code = Reason.TRUNCATED if "truncated" in str(exc).lower() else Reason.DECODE_FAILED
        raise Rejected(code, f"The image could not be decoded ({type(exc).__name__}).") from exc
    if float(pixels.max()) == float(pixels.min()):
        raise Rejected(Reason.BLANK_IMAGE, "Every pixel has the same value.")
    if pixels.ndim == 3:
        pixels = luminance(pixels)[None] if channels == 1 else np.moveaxis(pixels, -1, 0)
    else:
        pixels = np.repeat(pixels[None], channels, axis=0)
    return Decoded(pixels[None].astype(np.float32), facts)


def _check_size(image: Any, limits: DecodeLimits) -> None:
    width, height = image.size
    if not all(limits.min_side <= side <= limits.max_side for side in (width, height)):
        raise Rejected(
            Reason.OUT_OF_RANGE,
            f"Declared image is {height}×{width}; sides must be "
            f"{limits.min_side}..{limits.max_side}.",
        )
    if width * height * 8 > limits.max_pixel_bytes:
        raise Rejected(Reason.OUT_OF_RANGE, "Decoded pixels would exceed the memory limit.")


def _to_unit(image: Any) -> np.ndarray:
    """Grayscale H×W, or RGB H×W×3, in [0, 1]; alpha and palettes resolved."""
    if image.mode in _GRAY_SCALES:
        return np.asarray(image, dtype=np.float64) / _GRAY_SCALES[image.mode]
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    if image.mode in ("LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
