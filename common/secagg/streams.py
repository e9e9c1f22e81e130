"""Cryptographic streams: ChaCha20 keystream as masks mod 2^k and as uniforms for rounding.

Invariants:

- a mask is ChaCha20(key) keystream read as little-endian uint64 words and reduced mod 2^k; since
  2^k divides 2^64 every residue is equally likely, and a 256-bit key means no seed can be guessed
  (Flower's SecAgg+ folds its secret into a 32-bit NumPy seed: 2^32 guesses recover a mask);
- each stream key is used for exactly one stream (fresh per round, pair or seed), so the fixed
  nonce below never repeats under one key;
- the uniforms of stochastic rounding come from a fresh :func:`secrets` key: no code path uses a
  non-cryptographic generator.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedscan.common.secagg.crypto import KEY_BYTES

STREAM_NONCE = bytes(16)  # ChaCha20's 16-byte nonce: a 32-bit counter and 96 bits, all zero
WORD = np.dtype("<u8")
FLOAT_MANTISSA_BITS = 53  # the top 53 bits of a word make an exact float64 in [0, 1)


def new_seed() -> bytes:
    """A 32-byte secret seed (a self-mask seed, a rounding key)."""
    return secrets.token_bytes(KEY_BYTES)


def keystream_words(key: bytes, count: int) -> np.ndarray:
    """``count`` uint64 words of ChaCha20(key) keystream."""
    encryptor = Cipher(algorithms.ChaCha20(key, STREAM_NONCE), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(bytes(count * WORD.itemsize)), dtype=WORD)
    return words.astype(np.uint64, copy=False)  # no copy on little-endian machines


def mask(key: bytes, count: int, bits: int) -> np.ndarray:
    """``count`` uniform integers mod 2^bits (bits <= 64) from the key's keystream."""
    return keystream_words(key, count) & modulus_mask(bits)


def modulus_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def uniforms(count: int) -> np.ndarray:
    """``count`` uniform floats in [0, 1) from a fresh secret key."""
    words = keystream_words(new_seed(), count) >> np.uint64(64 - FLOAT_MANTISSA_BITS)
    return words.astype(np.float64) * 2.0**-FLOAT_MANTISSA_BITS
