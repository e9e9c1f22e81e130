"""The messages of one secure-aggregation round, in the order they travel.

    site -> aggregator  KeyAdvert        two X25519 public keys
    aggregator -> all   Roster           every advert accepted (U1), sorted by site id
    site -> aggregator  ShareBundle      one sealed pair of shares per other roster site
    aggregator -> site  ShareDelivery    the envelopes addressed to it from the sites of U2
    site -> aggregator  MaskedInput      encoded update + self-mask +/- pairwise masks, mod 2^k
    aggregator -> U3    UnmaskRequest    who sent a masked input (U3)
    site -> aggregator  UnmaskAnswer     seed shares of U3, key shares of U2 minus U3

Invariants: messages are frozen and carry no secret in the clear (shares travel sealed
site-to-site; an answer reveals one kind of share per peer); ``nbytes`` is the payload a
transport must carry (keys, envelopes, arrays, shares and ids; no framing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedscan.common.secagg.crypto import KEY_BYTES
from fedscan.common.secagg.errors import SecAggProtocolError
from fedscan.common.secagg.shamir import SHARE_BYTES

OwnerShare = tuple[str, int]  # (whose secret, the share's value); x is the answerer's place


def _id_bytes(*ids: str) -> int:
    return sum(len(site_id.encode()) for site_id in ids)


@dataclass(frozen=True)
class KeyAdvert:
    """A site's two public keys for this round: one seals shares, one derives masks."""

    site_id: str
    encryption_key: bytes
    masking_key: bytes

    @property
    def nbytes(self) -> int:
        return _id_bytes(self.site_id) + 2 * KEY_BYTES


@dataclass(frozen=True)
class Roster:
    """U1: the adverts of the round, sorted by site id; a site's place is its Shamir point."""

    run_id: str
    round: int
    adverts: tuple[KeyAdvert, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(advert.site_id for advert in self.adverts)

    def point(self, site_id: str) -> int:
        """The 1-based place of ``site_id``: where its shares of everyone's secrets lie."""
        return self.ids.index(site_id) + 1

    def advert(self, site_id: str) -> KeyAdvert:
        for advert in self.adverts:
            if advert.site_id == site_id:
                return advert
        raise SecAggProtocolError(f"Site {site_id} is not in the round's roster.")

    @property
    def nbytes(self) -> int:
        return _id_bytes(self.run_id) + sum(advert.nbytes for advert in self.adverts)


@dataclass(frozen=True)
class Envelope:
    """One site's shares for another, sealed with their pair's envelope key."""

    sender: str
    receiver: str
    sealed: bytes

    @property
    def nbytes(self) -> int:
        return _id_bytes(self.sender, self.receiver) + len(self.sealed)


@dataclass(frozen=True)
class ShareBundle:
    """From one site: an envelope for every other site of the roster."""

    sender: str
    envelopes: tuple[Envelope, ...]

    @property
    def nbytes(self) -> int:
        return sum(envelope.nbytes for envelope in self.envelopes)


@dataclass(frozen=True)
class ShareDelivery:
    """To one site: the envelopes addressed to it by the sites whose bundles arrived (U2)."""

    receiver: str
    envelopes: tuple[Envelope, ...]

    @property
    def nbytes(self) -> int:
        return sum(envelope.nbytes for envelope in self.envelopes)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """A site's masked, encoded update: dimension + 1 uint64 values below 2^k."""

    site_id: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return _id_bytes(self.site_id) + self.values.nbytes


@dataclass(frozen=True)
class UnmaskRequest:
    """U3: the sites whose masked inputs are in the sum."""

    survivors: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return _id_bytes(*self.survivors)


@dataclass(frozen=True)
class UnmaskAnswer:
    """A survivor's shares: of each survivor's self-mask seed, of each dropped site's key."""

    site_id: str
    seed_shares: tuple[OwnerShare, ...]
    key_shares: tuple[OwnerShare, ...]

    @property
    def nbytes(self) -> int:
        shares = (*self.seed_shares, *self.key_shares)
        return _id_bytes(self.site_id, *(owner for owner, _ in shares)) + SHARE_BYTES * len(shares)


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The unmasked sum of the survivors' weighted updates, and how far it may be off."""

    weighted_sum: np.ndarray
    weight_total: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    error_bound: float  # per coordinate of weighted_sum, strict (see quantise)

    @property
    def mean(self) -> np.ndarray:
        """The weighted mean update (FedAvg's aggregate)."""
        return self.weighted_sum / self.weight_total

    @property
    def mean_error_bound(self) -> float:
        return self.error_bound / self.weight_total
