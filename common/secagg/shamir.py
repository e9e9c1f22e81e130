"""Shamir secret sharing over the prime field GF(2^521 − 1), on Python integers.

Invariants:

- a secret is an integer in [0, PRIME); the 32-byte secrets of the protocol (a self-mask seed, an
  X25519 private key) are below 2^256, far below the prime, so no secret is ever reduced;
- ``split`` draws the polynomial's coefficients with :mod:`secrets` and evaluates it at the
  points 1..count: any ``threshold`` shares give the secret back, any fewer are uniformly random
  and independent of it;
- ``reconstruct`` refuses fewer than ``threshold`` shares and duplicate or zero points, instead
  of silently interpolating a wrong value.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

# The Mersenne prime M521: above 2^256 (every secret fits) and fast to reduce.
PRIME = 2**521 - 1
# A share's value on the wire: big-endian, fixed width, so a ciphertext's length says nothing.
SHARE_BYTES = (PRIME.bit_length() + 7) // 8


@dataclass(frozen=True)
class Share:
    """One point (x, f(x)) of the secret's polynomial; x is the holder's 1-based place."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not 0 < self.x < PRIME or not 0 <= self.y < PRIME:
            raise ValueError("A Shamir share must have 0 < x < PRIME and 0 <= y < PRIME.")


def split(secret: int, *, threshold: int, count: int) -> list[Share]:
    """``count`` shares of ``secret``, any ``threshold`` of which reconstruct it.

    Parameters
    ----------
    secret : int
        The value to share, in [0, PRIME).
    threshold : int
        Shares needed to reconstruct, 1 <= threshold <= count.
    count : int
        Shares made, at the points 1..count.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("The secret to share must lie in [0, PRIME).")
    if not 1 <= threshold <= count:
        raise ValueError(f"The threshold ({threshold}) must lie between 1 and {count} shares.")
    coefficients = [secret, *(secrets.randbelow(PRIME) for _ in range(threshold - 1))]
    return [Share(x, _evaluate(coefficients, x)) for x in range(1, count + 1)]


def reconstruct(shares: Sequence[Share], *, threshold: int) -> int:
    """The secret from at least ``threshold`` shares (the first ``threshold`` are used)."""
    if len(shares) < threshold:
        raise ValueError(
            f"{len(shares)} shares cannot reconstruct a secret shared with threshold {threshold}."
        )
    return interpolate_at_zero(shares[:threshold])


def interpolate_at_zero(shares: Sequence[Share]) -> int:
    """Lagrange interpolation of the shares' polynomial at 0 (no threshold check)."""
    return combine([share.y for share in shares], lagrange_weights([share.x for share in shares]))


def lagrange_weights(points: Sequence[int]) -> list[int]:
    """The Lagrange basis at 0 for ``points``: compute once, reuse for every secret they share."""
    if not points or len(set(points)) != len(points) or not all(0 < x < PRIME for x in points):
        raise ValueError("Shamir points must be distinct, non-zero field elements.")
    weights = []
    for x in points:
        numerator, denominator = 1, 1
        for other in points:
            if other != x:
                numerator = numerator * other % PRIME
                denominator = denominator * (other - x) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return weights


def combine(ys: Sequence[int], weights: Sequence[int]) -> int:
    """The secret from share values with precomputed :func:`lagrange_weights`."""
    return sum(weight * y for weight, y in zip(weights, ys, strict=True)) % PRIME


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):  # Horner
        value = (value * x + coefficient) % PRIME
    return value
