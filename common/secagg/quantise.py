"""Fixed-point encoding of weighted updates mod 2^k, so that a masked sum cannot overflow.

Encoding at one site (update x of d floats, weight w an integer with 1 <= w <= W):

1. clip: x <- x * min(1, C / ||x||_2), then every coordinate into [-C, C] (float rounding);
2. scale: v = w * x / step with step = C / 2^b (b precision bits), so |v| <= W * 2^b;
3. round stochastically: q = floor(v) + [u < v - floor(v)], u uniform from a ChaCha20 stream,
   so E[q] = v, |q - v| < 1 and still |q| <= W * 2^b;
4. append w as coordinate d + 1 (exact) and write every signed value mod 2^k.

Overflow rule: k = bit_length(n * W * 2^b) + 1 for the n sites of the roster. Any subset of them
sums, coordinate by coordinate, to a signed value of magnitude <= n * W * 2^b < 2^(k-1), so the
sum mod 2^k decodes without wrapping; the weight coordinate (<= n * W) is smaller still.
W * 2^b <= 2^52 keeps step 2 exact in float64, and k <= 54 keeps the decoded sum exact too.

Error bound: for m summed sites, the dequantised weighted sum step * sum(q) differs from the sum
of w_i * clip(x_i) by less than m * step in every coordinate (each site's rounding is below one
step) and is unbiased; the weighted mean, divided by the exact sum of weights, by less than
m * step / sum(w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedscan.common.secagg.streams import modulus_mask, uniforms

FLOAT_EXACT_BITS = 52  # W * 2^b up to 2^52 scales without losing an integer step in float64
# Signed sums below 2^53 become float64 exactly, so decoding adds no error to the bound; that
# still allows 8 191 sites at the defaults (W * 2^b = 2^40).
MAX_BITS = 54


@dataclass(frozen=True)
class Quantiser:
    """The shared encoding of one round: every site and the aggregator build the same one."""

    clip_bound: float
    max_weight: int
    precision_bits: int
    sites: int

    def __post_init__(self) -> None:
        if not np.isfinite(self.clip_bound) or self.clip_bound <= 0:
            raise ValueError("The clipping bound should be a positive, finite value.")
        if self.max_weight < 1 or self.precision_bits < 1 or self.sites < 1:
            raise ValueError("The maximum weight, precision bits and sites should be positive.")
        if self.max_weight << self.precision_bits > 1 << FLOAT_EXACT_BITS:
            raise ValueError(
                "max-weight * 2^precision-bits exceeds 2^52: lower the precision bits or the "
                "maximum weight (cap num-examples)."
            )
        if self.bits > MAX_BITS:
            raise ValueError(f"{self.sites} sites need {self.bits}-bit sums; at most {MAX_BITS}.")

    @property
    def step(self) -> float:
        """One quantisation step in units of weight x update: C / 2^b."""
        return math.ldexp(self.clip_bound, -self.precision_bits)

    @property
    def bits(self) -> int:
        """k: the modulus 2^k under which masked sums are taken (the overflow rule)."""
        return (self.sites * self.max_weight << self.precision_bits).bit_length() + 1

    def error_bound(self, summed_sites: int) -> float:
        """Largest error of one coordinate of the dequantised weighted sum (strict bound)."""
        return summed_sites * self.step

    def encode(self, update: np.ndarray, weight: int) -> np.ndarray:
        """d + 1 integers mod 2^k: the quantised ``weight * clip(update)``, then ``weight``."""
        if not 1 <= weight <= self.max_weight:
            raise ValueError(f"A site's weight must lie in [1, {self.max_weight}], not {weight}.")
        limit = float(weight << self.precision_bits)  # exact: at most 2^52
        scaled = np.clip(clip(update, self.clip_bound) * (weight / self.step), -limit, limit)
        values = np.append(stochastic_round(scaled), np.int64(weight))
        return values.astype(np.uint64) & modulus_mask(self.bits)  # two's complement mod 2^k

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """(dequantised weighted sum, sum of weights) from a sum of encodings mod 2^k."""
        residues = (total & modulus_mask(self.bits)).astype(np.int64)
        signed = np.where(residues >= 1 << (self.bits - 1), residues - (1 << self.bits), residues)
        return signed[:-1].astype(np.float64) * self.step, int(signed[-1])


def clip(update: np.ndarray, bound: float) -> np.ndarray:
    """The update as float64, scaled into the L2 ball of radius ``bound``."""
    values = np.asarray(update, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError("An update to aggregate must be finite (NaN or infinity found).")
    norm = float(np.linalg.norm(values))
    if norm > bound:
        values = values * (bound / norm)
    return np.clip(values, -bound, bound)  # the scaling's float rounding must not pass C


def stochastic_round(values: np.ndarray) -> np.ndarray:
    """Integers q with E[q] = values and |q - values| < 1, from cryptographic uniforms."""
    floor = np.floor(values)
    return (floor + (uniforms(values.size) < values - floor)).astype(np.int64)
