"""The coordinator's side of a secure-aggregation round, as a state machine.

    add_advert* -> close_adverts() -> Roster
    add_shares* -> close_shares() -> {site: ShareDelivery}
    add_masked_input* -> close_masked_inputs() -> UnmaskRequest
    add_answer* -> finish() -> SecAggResult

The caller decides when a stage closes (its round timeout); whoever has not sent by then has
dropped. Invariants:

- every ``close_*`` and ``finish`` checks that at least ``threshold`` sites are left, else raises
  :class:`SecAggAborted` (code ``quorum-lost``) and the round has no sum;
- the aggregator only routes envelopes it cannot open; it learns one kind of secret per site:
  the self-mask seeds of the survivors (U3) and the masking keys of the sites that dropped before
  masking (U2 minus U3), each from ``threshold`` answers;
- a reconstructed masking key must match the key its owner advertised, so a wrong share is
  caught instead of corrupting the sum;
- the result is the sum over U3 only, within the quantiser's error bound.
"""

from __future__ import annotations

from enum import Enum, auto

import numpy as np

from fedscan.common.secagg import shamir
from fedscan.common.secagg.checks import check_advert, check_new, check_quorum
from fedscan.common.secagg.config import SecAggConfig
from fedscan.common.secagg.crypto import (
    KEY_BYTES,
    private_key_from_int,
    public_bytes,
    sealed_size,
)
from fedscan.common.secagg.errors import SecAggProtocolError
from fedscan.common.secagg.masking import add_pair_masks, remove_self_mask
from fedscan.common.secagg.messages import (
    Envelope,
    KeyAdvert,
    MaskedInput,
    Roster,
    SecAggResult,
    ShareBundle,
    ShareDelivery,
    UnmaskAnswer,
    UnmaskRequest,
)
from fedscan.common.secagg.quantise import Quantiser

SEALED_BYTES = sealed_size(2 * shamir.SHARE_BYTES)  # a key share and a seed share
SECRET_LIMIT = 1 << (8 * KEY_BYTES)  # seeds and private keys are 32 bytes


class _Stage(Enum):
    ADVERTS = auto()
    SHARES = auto()
    INPUTS = auto()
    ANSWERS = auto()
    DONE = auto()


class SecAggAggregator:
    """The coordinator's state for one round; make a new one every round."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._stage = _Stage.ADVERTS
        self._adverts: dict[str, KeyAdvert] = {}
        self._roster = Roster(config.run_id, config.round, ())
        self._bundles: dict[str, ShareBundle] = {}
        self._inputs: dict[str, np.ndarray] = {}
        # answerer -> owner -> share value, for the survivors' seeds and the dropped sites' keys
        self._seeds: dict[str, dict[str, int]] = {}
        self._keys: dict[str, dict[str, int]] = {}

    @property
    def quantiser(self) -> Quantiser:
        return self.config.quantiser(len(self._roster.ids))

    def add_advert(self, advert: KeyAdvert) -> None:
        self._expect(_Stage.ADVERTS)
        check_advert(advert)
        check_new("An advert", advert.site_id, allowed=None, known=self._adverts)
        seen = {key for a in self._adverts.values() for key in (a.encryption_key, a.masking_key)}
        if {advert.encryption_key, advert.masking_key} & seen:
            raise SecAggProtocolError(f"Site {advert.site_id} advertised another site's key.")
        self._adverts[advert.site_id] = advert

    def close_adverts(self) -> Roster:
        """U1, to broadcast to every site that advertised."""
        self._expect(_Stage.ADVERTS)
        check_quorum("advertise-keys", len(self._adverts), len(self._adverts), self._threshold)
        self.config.check_roster_size(len(self._adverts))
        adverts = tuple(self._adverts[site_id] for site_id in sorted(self._adverts))
        self._roster = Roster(self.config.run_id, self.config.round, adverts)
        self._stage = _Stage.SHARES
        return self._roster

    def add_shares(self, bundle: ShareBundle) -> None:
        self._expect(_Stage.SHARES)
        check_new("A share bundle", bundle.sender, allowed=self._roster.ids, known=self._bundles)
        receivers = [envelope.receiver for envelope in bundle.envelopes]
        if sorted(receivers) != [site for site in self._roster.ids if site != bundle.sender]:
            raise SecAggProtocolError(
                f"Site {bundle.sender}'s bundle must hold one envelope for every other site."
            )
        for envelope in bundle.envelopes:
            if envelope.sender != bundle.sender or len(envelope.sealed) != SEALED_BYTES:
                raise SecAggProtocolError(f"Site {bundle.sender} sent a malformed envelope.")
        self._bundles[bundle.sender] = bundle

    def close_shares(self) -> dict[str, ShareDelivery]:
        """U2: to each site whose bundle arrived, the envelopes addressed to it by the others."""
        self._expect(_Stage.SHARES)
        expected = len(self._roster.ids)
        check_quorum("share-keys", len(self._bundles), expected, self._threshold)
        routed: dict[str, list[Envelope]] = {site: [] for site in self._bundles}
        for bundle in self._bundles.values():
            for envelope in bundle.envelopes:
                if envelope.receiver in routed:
                    routed[envelope.receiver].append(envelope)
        self._stage = _Stage.INPUTS
        return {site: ShareDelivery(site, tuple(routed[site])) for site in sorted(routed)}

    def add_masked_input(self, masked: MaskedInput) -> None:
        self._expect(_Stage.INPUTS)
        check_new("A masked input", masked.site_id, allowed=self._bundles, known=self._inputs)
        values = masked.values
        shape = (self.config.dimension + 1,)
        if not isinstance(values, np.ndarray) or values.dtype != np.uint64 or values.shape != shape:
            raise SecAggProtocolError(
                f"Site {masked.site_id}'s masked input must be {self.config.dimension + 1} "
                "uint64 values."
            )
        if values.max() >> np.uint64(self.quantiser.bits):
            raise SecAggProtocolError(f"Site {masked.site_id}'s masked input exceeds 2^k.")
        self._inputs[masked.site_id] = values

    def close_masked_inputs(self) -> UnmaskRequest:
        """U3: the request to send to every site whose masked input arrived."""
        self._expect(_Stage.INPUTS)
        check_quorum("masked-input", len(self._inputs), len(self._bundles), self._threshold)
        self._stage = _Stage.ANSWERS
        return UnmaskRequest(tuple(sorted(self._inputs)))

    def add_answer(self, answer: UnmaskAnswer) -> None:
        self._expect(_Stage.ANSWERS)
        check_new("An unmask answer", answer.site_id, allowed=self._inputs, known=self._seeds)
        seeds, keys = dict(answer.seed_shares), dict(answer.key_shares)
        if [owner for owner, _ in answer.seed_shares] != sorted(self._inputs) or [
            owner for owner, _ in answer.key_shares
        ] != self._dropped():
            raise SecAggProtocolError(
                f"Site {answer.site_id}'s answer must hold one seed share per survivor and one "
                "key share per site that dropped before masking, in site order."
            )
        values = (*seeds.values(), *keys.values())
        if not all(isinstance(y, int) and 0 <= y < shamir.PRIME for y in values):
            raise SecAggProtocolError(f"Site {answer.site_id}'s answer holds a value off-field.")
        self._seeds[answer.site_id], self._keys[answer.site_id] = seeds, keys

    def finish(self) -> SecAggResult:
        """Remove every mask and decode: the survivors' weighted sum."""
        self._expect(_Stage.ANSWERS)
        check_quorum("unmask", len(self._seeds), len(self._inputs), self._threshold)
        total = np.zeros(self.config.dimension + 1, dtype=np.uint64)
        for values in self._inputs.values():
            total += values
        self._unmask(total)
        weighted_sum, weight_total = self.quantiser.decode(total)
        self._stage = _Stage.DONE
        survivors = tuple(sorted(self._inputs))
        return SecAggResult(
            weighted_sum,
            weight_total,
            survivors,
            tuple(self._dropped()),
            self.quantiser.error_bound(len(survivors)),
        )

    def _unmask(self, total: np.ndarray) -> None:
        """Subtract the survivors' self-masks; add the dropped sites' own pairwise terms."""
        answerers = sorted(self._seeds)[: self._threshold]
        weights = shamir.lagrange_weights([self._roster.point(site) for site in answerers])
        bits, survivors = self.quantiser.bits, sorted(self._inputs)

        def secret(shares: dict[str, dict[str, int]], owner: str) -> int:
            value = shamir.combine([shares[answerer][owner] for answerer in answerers], weights)
            if value >= SECRET_LIMIT:
                raise SecAggProtocolError(f"The shares of {owner}'s secrets are inconsistent.")
            return value

        for owner in survivors:
            remove_self_mask(total, secret(self._seeds, owner).to_bytes(KEY_BYTES, "big"), bits)
        for owner in self._dropped():
            private = private_key_from_int(secret(self._keys, owner))
            if public_bytes(private) != self._roster.advert(owner).masking_key:
                raise SecAggProtocolError(f"The shares of {owner}'s key match no advertised key.")
            peers = [self._roster.advert(site) for site in survivors]
            binding = self.config.binding
            add_pair_masks(
                total, private=private, me=owner, peers=peers, binding=binding, bits=bits
            )

    def _dropped(self) -> list[str]:
        return sorted(set(self._bundles) - set(self._inputs))

    @property
    def _threshold(self) -> int:
        return self.config.threshold

    def _expect(self, stage: _Stage) -> None:
        if self._stage is not stage:
            raise SecAggProtocolError(
                f"The aggregator is at {self._stage.name.lower()}, not {stage.name.lower()}: "
                "secure-aggregation stages run once, in order."
            )
