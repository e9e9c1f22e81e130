"""A site's masks: one self-mask and one pairwise mask per peer, all mod 2^k.

Invariants:

- for a pair a < b (string order of site ids) a adds PRG(s_ab) and b subtracts it, so the pair's
  masks cancel in any sum that holds both inputs;
- s_ab = HKDF(X25519(a's masking key, b's public masking key), the pair's binding): both sites
  derive it, and so does the aggregator once it has reconstructed a dropped site's private key;
  it then adds the dropped site's own terms, which cancel the survivors' terms for it;
- the self-mask PRG(seed) uses a fresh 32-byte secret seed and comes off only when the seed is
  reconstructed from ``threshold`` shares, so a survivor's input stays hidden even when the
  pairwise keys of the sites that dropped become known;
- arithmetic is on uint64 (wrapping is reduction mod 2^64, and 2^k divides 2^64), reduced to k
  bits before anything leaves.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedscan.common.secagg.crypto import Binding, agree
from fedscan.common.secagg.messages import KeyAdvert
from fedscan.common.secagg.streams import mask, modulus_mask


def add_pair_masks(
    values: np.ndarray,
    *,
    private: X25519PrivateKey,
    me: str,
    peers: Iterable[KeyAdvert],
    binding: Binding,
    bits: int,
) -> None:
    """Add ``me``'s pairwise masks with each peer to ``values`` (uint64, in place)."""
    for peer in peers:
        key = agree(private, peer.masking_key, binding.mask_info(me, peer.site_id))
        term = mask(key, values.size, bits)
        if me < peer.site_id:
            values += term
        else:
            values -= term


def mask_input(
    encoded: np.ndarray,
    *,
    seed: bytes,
    private: X25519PrivateKey,
    me: str,
    peers: Iterable[KeyAdvert],
    binding: Binding,
    bits: int,
) -> np.ndarray:
    """encoded + PRG(seed) +/- PRG(s_me,peer) for every peer, mod 2^bits."""
    values = encoded + mask(seed, encoded.size, bits)
    add_pair_masks(values, private=private, me=me, peers=peers, binding=binding, bits=bits)
    return values & modulus_mask(bits)


def remove_self_mask(total: np.ndarray, seed: bytes, bits: int) -> None:
    """Subtract PRG(seed) from ``total`` (uint64, in place)."""
    total -= mask(seed, total.size, bits)
