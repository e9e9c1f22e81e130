"""A site's intensity policy: modality values (HU for CT) → [0, 1], the same way for every series.

Policies (site TOML ``[data] intensity``):

- ``auto`` — CT: the HU range −1000..400 (air to dense soft tissue, lungs and nodules both
  visible); MR and anything else: the 1–99 percentile range of the series;
- ``lung`` (window 1500 / level −600), ``mediastinum`` (350 / 50), ``soft-tissue`` (400 / 40),
  ``bone`` (1800 / 400) — the usual CT windows;
- ``hu:LOW,HIGH`` — a HU range; ``percentile:LOW,HIGH`` — per-series percentiles (MR).

CT values are absolute, so a window maps the same tissue to the same value at every hospital; MR
values are not, so MR needs percentiles. Values outside the range clip to 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedscan.common.errors import ConfigError

_WINDOWS = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "soft-tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
}
_AUTO_CT = (-1000.0, 400.0)
_AUTO_PERCENTILES = (1.0, 99.0)
POLICY_HELP = (
    "auto | lung | mediastinum | soft-tissue | bone | hu:LOW,HIGH | percentile:LOW,HIGH "
    "(auto: CT HU −1000..400, MR the 1–99 percentiles)"
)


@dataclass(frozen=True)
class IntensityPolicy:
    """``kind`` "hu" (a fixed range), "percentile" or "auto"; ``low``/``high`` its bounds."""

    kind: str
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def parse(cls, text: str) -> IntensityPolicy:
        name, _, bounds = text.strip().lower().partition(":")
        if name == "auto" and not bounds:
            return cls("auto")
        if name in _WINDOWS and not bounds:
            width, level = _WINDOWS[name]
            return cls("hu", level - width / 2, level + width / 2)
        if name in ("hu", "percentile"):
            low, high = _bounds(bounds, text)
            if name == "percentile" and not 0 <= low < high <= 100:
                raise ConfigError(f"intensity {text!r}: percentiles need 0 ≤ LOW < HIGH ≤ 100.")
            return cls(name, low, high)
        raise ConfigError(f"Unknown intensity {text!r}; use {POLICY_HELP}.")

    def apply(self, values: np.ndarray, modality: str) -> np.ndarray:
        """``values`` (modality values) → float32 in [0, 1]."""
        kind, low, high = self.kind, self.low, self.high
        if kind == "auto":
            kind, (low, high) = (
                ("hu", _AUTO_CT)
                if modality == "CT"
                else (
                    "percentile",
                    _AUTO_PERCENTILES,
                )
            )
        if kind == "percentile":
            low, high = (float(v) for v in np.percentile(values, [low, high]))
            if high <= low:
                return np.zeros(values.shape, np.float32)
        return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _bounds(text: str, whole: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"intensity {whole!r}: give two numbers, LOW,HIGH.") from None
    if not low < high:
        raise ConfigError(f"intensity {whole!r}: LOW must be below HIGH.")
    return low, high
