"""Ratios of counts, undefined (NaN) rather than 0 when nothing was counted."""

from __future__ import annotations

import math


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN (undefined, not 0) when the denominator is 0."""
    return numerator / denominator if denominator else math.nan
