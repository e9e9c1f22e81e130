"""Key agreement and share envelopes: X25519, HKDF-SHA256 and ChaCha20-Poly1305 from
``cryptography``, nothing home-made.

Invariants:

- every derived key is bound through HKDF's ``info`` to its purpose, the run id, the round and
  both site ids, each field length-prefixed so that no two bindings encode to the same bytes;
- a mask key binds the pair unordered (both sites derive the same key); an envelope key binds
  (sender, receiver) in order, so the two directions of a pair never share a key;
- an envelope also takes a fresh random nonce (:func:`os.urandom`) and authenticates the binding as
  associated data: a ciphertext routed to the wrong site, round or run fails to open;
- a peer key that yields no shared secret (a low-order point) is a protocol error, never a zero key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedscan.common.secagg.errors import SecAggProtocolError

DOMAIN = b"fedscan-secagg-v1"
KEY_BYTES = 32  # X25519 keys, HKDF outputs and ChaCha20 keys alike
AEAD_NONCE_BYTES = 12
AEAD_TAG_BYTES = 16
FIELD_LENGTH_BYTES = 2  # the length prefix of each bound field
ROUND_BYTES = 8


class Purpose(StrEnum):
    """What a derived key is for; part of every HKDF ``info``."""

    MASK = "pairwise-mask"
    ENVELOPE = "share-envelope"


@dataclass(frozen=True)
class Binding:
    """The run and round every key and envelope of a round is bound to."""

    run_id: str
    round: int

    def info(self, purpose: Purpose, first: str, second: str) -> bytes:
        """HKDF ``info`` / AEAD associated data for ``purpose`` between two sites, in order."""
        fields = (DOMAIN, purpose.encode(), self.run_id.encode(), first.encode(), second.encode())
        encoded = b"".join(
            len(field).to_bytes(FIELD_LENGTH_BYTES, "big") + field for field in fields
        )
        return encoded + self.round.to_bytes(ROUND_BYTES, "big")

    def mask_info(self, one: str, other: str) -> bytes:
        """The pair's mask binding: the same for both sites (ids sorted)."""
        low, high = sorted((one, other))
        return self.info(Purpose.MASK, low, high)


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def load_public(data: bytes) -> X25519PublicKey:
    if len(data) != KEY_BYTES:
        raise SecAggProtocolError(f"An X25519 public key has {KEY_BYTES} bytes, not {len(data)}.")
    return X25519PublicKey.from_public_bytes(data)


def private_key_from_int(value: int) -> X25519PrivateKey:
    """The private key whose raw bytes are ``value`` (a reconstructed Shamir secret)."""
    return X25519PrivateKey.from_private_bytes(value.to_bytes(KEY_BYTES, "big"))


def private_key_to_int(key: X25519PrivateKey) -> int:
    return int.from_bytes(key.private_bytes_raw(), "big")


def agree(private: X25519PrivateKey, peer: bytes, info: bytes) -> bytes:
    """A 32-byte key from X25519(private, peer) through HKDF-SHA256 with ``info``."""
    try:
        shared = private.exchange(load_public(peer))
    except ValueError as error:  # OpenSSL refuses an all-zero shared secret
        raise SecAggProtocolError("A peer's public key gives no shared secret.") from error
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """nonce ‖ ChaCha20-Poly1305(plaintext), authenticating ``associated``."""
    nonce = os.urandom(AEAD_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, envelope: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`seal`; a forged, altered or misrouted envelope is an error."""
    nonce, body = envelope[:AEAD_NONCE_BYTES], envelope[AEAD_NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, associated)
    except InvalidTag as error:
        raise SecAggProtocolError(
            "A share envelope failed authentication (altered, or routed to the wrong site)."
        ) from error


def sealed_size(plaintext_bytes: int) -> int:
    return AEAD_NONCE_BYTES + plaintext_bytes + AEAD_TAG_BYTES
