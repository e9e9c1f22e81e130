"""Secure-aggregation messages (:mod:`fedscan.common.secagg`) as Flower records, both ways.

Both roles use this module (it knows Flower, so it is not in ``fedscan.common``): a site writes its
advert, share bundle, masked input and unmask answer with it (through its reply builder), the
coordinator its roster, share deliveries and unmask request; each side reads the other's.

Invariants: every key is named in :mod:`fedscan.common.protocol`; reading checks every type and
length it can and raises :class:`~fedscan.common.secagg.SecAggProtocolError` (a coded
``FedscanError``) for anything malformed, so a bad record never reaches a state machine; Shamir
shares (up to 521 bits) travel as fixed-width big-endian bytes, never as numbers; a masked input
is one uint64 array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedscan.common import protocol as p
from fedscan.common.secagg import (
    Envelope,
    KeyAdvert,
    MaskedInput,
    Roster,
    SecAggProtocolError,
    ShareBundle,
    ShareDelivery,
    UnmaskAnswer,
    UnmaskRequest,
)
from fedscan.common.secagg.shamir import SHARE_BYTES


def advert_record(advert: KeyAdvert) -> ConfigRecord:
    return ConfigRecord(
        {
            p.SECAGG_SITE_ID: advert.site_id,
            p.SECAGG_ENCRYPTION_KEY: advert.encryption_key,
            p.SECAGG_MASKING_KEY: advert.masking_key,
        }
    )


def read_advert(record: ConfigRecord) -> KeyAdvert:
    return KeyAdvert(
        _text(record, p.SECAGG_SITE_ID),
        _bytes(record, p.SECAGG_ENCRYPTION_KEY),
        _bytes(record, p.SECAGG_MASKING_KEY),
    )


def roster_record(roster: Roster) -> ConfigRecord:
    adverts = roster.adverts
    return ConfigRecord(
        {
            p.SECAGG_SITE_IDS: [advert.site_id for advert in adverts],
            p.SECAGG_ENCRYPTION_KEYS: [advert.encryption_key for advert in adverts],
            p.SECAGG_MASKING_KEYS: [advert.masking_key for advert in adverts],
        }
    )


def read_roster(record: ConfigRecord, run_id: str, server_round: int) -> Roster:
    ids = _list(record, p.SECAGG_SITE_IDS, str)
    encryption = _list(record, p.SECAGG_ENCRYPTION_KEYS, bytes, len(ids))
    masking = _list(record, p.SECAGG_MASKING_KEYS, bytes, len(ids))
    adverts = tuple(KeyAdvert(*fields) for fields in zip(ids, encryption, masking, strict=True))
    return Roster(run_id, server_round, adverts)


def envelopes_record(envelopes: Sequence[Envelope]) -> ConfigRecord:
    """A share bundle's or a share delivery's envelopes."""
    return ConfigRecord(
        {
            p.SECAGG_SENDERS: [envelope.sender for envelope in envelopes],
            p.SECAGG_RECEIVERS: [envelope.receiver for envelope in envelopes],
            p.SECAGG_SEALED: [envelope.sealed for envelope in envelopes],
        }
    )


def _read_envelopes(record: ConfigRecord) -> tuple[Envelope, ...]:
    senders = _list(record, p.SECAGG_SENDERS, str)
    receivers = _list(record, p.SECAGG_RECEIVERS, str, len(senders))
    sealed = _list(record, p.SECAGG_SEALED, bytes, len(senders))
    return tuple(Envelope(*fields) for fields in zip(senders, receivers, sealed, strict=True))


def read_bundle(record: ConfigRecord, sender: str) -> ShareBundle:
    return ShareBundle(sender, _read_envelopes(record))


def read_delivery(record: ConfigRecord, receiver: str) -> ShareDelivery:
    return ShareDelivery(receiver, _read_envelopes(record))


def masked_record(masked: MaskedInput) -> ArrayRecord:
    return ArrayRecord({p.SECAGG_VALUES: Array(np.ascontiguousarray(masked.values))})


def read_masked(record: ArrayRecord, site_id: str) -> MaskedInput:
    if list(record) != [p.SECAGG_VALUES]:
        raise SecAggProtocolError(f"Site {site_id}'s masked input must be one array.")
    return MaskedInput(site_id, record[p.SECAGG_VALUES].numpy())


def request_record(request: UnmaskRequest) -> ConfigRecord:
    return ConfigRecord({p.SECAGG_SURVIVORS: list(request.survivors)})


def read_request(record: ConfigRecord) -> UnmaskRequest:
    return UnmaskRequest(tuple(_list(record, p.SECAGG_SURVIVORS, str)))


def answer_record(answer: UnmaskAnswer) -> ConfigRecord:
    def shares(pairs: Sequence[tuple[str, int]]) -> list[bytes]:
        return [value.to_bytes(SHARE_BYTES, "big") for _, value in pairs]

    return ConfigRecord(
        {
            p.SECAGG_SEED_OWNERS: [owner for owner, _ in answer.seed_shares],
            p.SECAGG_SEED_SHARES: shares(answer.seed_shares),
            p.SECAGG_KEY_OWNERS: [owner for owner, _ in answer.key_shares],
            p.SECAGG_KEY_SHARES: shares(answer.key_shares),
        }
    )


def read_answer(record: ConfigRecord, site_id: str) -> UnmaskAnswer:
    def pairs(owners_key: str, shares_key: str) -> tuple[tuple[str, int], ...]:
        owners = _list(record, owners_key, str)
        values = _list(record, shares_key, bytes, len(owners))
        if any(len(value) != SHARE_BYTES for value in values):
            raise SecAggProtocolError(f"Site {site_id}'s answer holds a share of the wrong size.")
        return tuple((o, int.from_bytes(v, "big")) for o, v in zip(owners, values, strict=True))

    seeds = pairs(p.SECAGG_SEED_OWNERS, p.SECAGG_SEED_SHARES)
    return UnmaskAnswer(site_id, seeds, pairs(p.SECAGG_KEY_OWNERS, p.SECAGG_KEY_SHARES))


def _text(record: ConfigRecord, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise SecAggProtocolError(f"A secure-aggregation record lacks the text {key!r}.")
    return value


def _bytes(record: ConfigRecord, key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise SecAggProtocolError(f"A secure-aggregation record lacks the bytes {key!r}.")
    return value


def _list(record: ConfigRecord, key: str, kind: type, length: int | None = None) -> list[Any]:
    """``record[key]``: a list of ``kind`` (``length`` of them when given); [] may be absent."""
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, kind) for item in value):
        raise SecAggProtocolError(f"A secure-aggregation record's {key!r} is malformed.")
    if length is not None and len(value) != length:
        raise SecAggProtocolError("A secure-aggregation record's lists differ in length.")
    return value
