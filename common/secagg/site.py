"""One site's side of a secure-aggregation round, as a state machine.

    advertise() -> share_keys(roster) -> mask(delivery, update, weight) -> unmask(request)

Invariants:

- each step runs once, in order (``unmask`` may be asked again, for a retransmission);
- the round's secrets (two X25519 private keys, the self-mask seed) are made here, by
  ``cryptography`` and :mod:`secrets`, and never leave except as Shamir shares, each sealed for
  one peer;
- the site masks only with the peers whose shares it holds (U2), so every mask can be removed;
- a site reveals, per peer, either a self-mask share (the peer is in the sum) or a masking-key
  share (the peer dropped), never both, across every request of the round: both would unmask
  that peer's update (:class:`UnmaskRefused`);
- :meth:`SecAggSite.to_state` holds the round's secrets in the clear: a caller that keeps a
  site between messages (a site answering each message in a fresh process) stores it where only
  the site can read it, and deletes it when the round ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

import numpy as np

from fedscan.common.secagg import shamir
from fedscan.common.secagg.checks import check_members, check_quorum, check_roster
from fedscan.common.secagg.config import SecAggConfig, check_site_id
from fedscan.common.secagg.crypto import (
    Purpose,
    agree,
    new_private_key,
    open_sealed,
    private_key_from_int,
    private_key_to_int,
    public_bytes,
    seal,
)
from fedscan.common.secagg.errors import SecAggProtocolError, UnmaskRefused
from fedscan.common.secagg.masking import mask_input
from fedscan.common.secagg.messages import (
    Envelope,
    KeyAdvert,
    MaskedInput,
    Roster,
    ShareBundle,
    ShareDelivery,
    UnmaskAnswer,
    UnmaskRequest,
)
from fedscan.common.secagg.streams import new_seed


class _Stage(Enum):
    NEW = auto()
    ADVERTISED = auto()
    SHARED = auto()
    MASKED = auto()


class _Revealed(Enum):
    SEED = auto()
    KEY = auto()


@dataclass(frozen=True)
class _Held:
    """This site's shares of one owner's secrets (its masking key and its self-mask seed)."""

    key: int
    seed: int


class SecAggSite:
    """A site's state for one round; make a new one every round."""

    def __init__(self, site_id: str, config: SecAggConfig) -> None:
        self.site_id = check_site_id(site_id)
        self.config = config
        self._encryption = new_private_key()
        self._masking = new_private_key()
        self._seed = new_seed()
        self._advert = KeyAdvert(
            self.site_id, public_bytes(self._encryption), public_bytes(self._masking)
        )
        self._stage = _Stage.NEW
        self._roster: Roster | None = None
        self._held: dict[str, _Held] = {}
        self._revealed: dict[str, _Revealed] = {}

    def to_state(self) -> dict[str, Any]:
        """Everything this site holds, JSON-safe: secrets included (see the module's invariants)."""
        roster = self._roster
        return {
            "site": self.site_id,
            "keys": [private_key_to_int(self._encryption), private_key_to_int(self._masking)],
            "seed": self._seed.hex(),
            "stage": self._stage.name,
            "roster": None if roster is None else _roster_state(roster),
            "held": {owner: [held.key, held.seed] for owner, held in self._held.items()},
            "revealed": {peer: kind.name for peer, kind in self._revealed.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: SecAggConfig) -> SecAggSite:
        """The site :meth:`to_state` saved, under ``config`` (the same run and round)."""
        site = cls(str(state["site"]), config)
        encryption, masking = (private_key_from_int(int(value)) for value in state["keys"])
        site._encryption, site._masking = encryption, masking
        site._seed = bytes.fromhex(state["seed"])
        site._advert = KeyAdvert(site.site_id, public_bytes(encryption), public_bytes(masking))
        site._stage = _Stage[state["stage"]]
        roster = state["roster"]
        site._roster = None if roster is None else _roster_from_state(roster)
        site._held = {owner: _Held(int(k), int(s)) for owner, (k, s) in state["held"].items()}
        site._revealed = {peer: _Revealed[kind] for peer, kind in state["revealed"].items()}
        return site

    def advertise(self) -> KeyAdvert:
        """The round's two public keys."""
        self._expect(_Stage.NEW)
        self._stage = _Stage.ADVERTISED
        return self._advert

    def share_keys(self, roster: Roster) -> ShareBundle:
        """Shamir-share the masking key and the seed; seal each peer's pair of shares."""
        self._expect(_Stage.ADVERTISED)
        check_roster(roster, self.config)
        if roster.advert(self.site_id) != self._advert:
            raise SecAggProtocolError("The roster does not carry this site's own keys.")
        count, threshold = len(roster.ids), self.config.threshold
        keys = shamir.split(private_key_to_int(self._masking), threshold=threshold, count=count)
        seeds = shamir.split(int.from_bytes(self._seed, "big"), threshold=threshold, count=count)
        envelopes = []
        for advert, key_share, seed_share in zip(roster.adverts, keys, seeds, strict=True):
            if advert.site_id == self.site_id:
                self._held[self.site_id] = _Held(key_share.y, seed_share.y)
            else:
                envelopes.append(self._seal(advert, key_share.y, seed_share.y))
        self._roster = roster
        self._stage = _Stage.SHARED
        return ShareBundle(self.site_id, tuple(envelopes))

    def mask(self, delivery: ShareDelivery, update: np.ndarray, weight: int) -> MaskedInput:
        """Open the peers' shares, then mask the encoded ``weight * clip(update)``."""
        roster = self._expect_roster(_Stage.SHARED)
        if np.asarray(update).size != self.config.dimension:
            raise ValueError(
                f"The update has {np.asarray(update).size} values, not "
                f"{self.config.dimension} (the round's dimension)."
            )
        opened = self._open_delivery(roster, delivery)
        quantiser = self.config.quantiser(len(roster.ids))
        values = mask_input(
            quantiser.encode(update, weight),
            seed=self._seed,
            private=self._masking,
            me=self.site_id,
            peers=[roster.advert(sender) for sender in opened],
            binding=self.config.binding,
            bits=quantiser.bits,
        )
        # Only now, all checks passed: a refused delivery leaves nothing behind.
        self._held.update(opened)
        self._stage = _Stage.MASKED
        return MaskedInput(self.site_id, values)

    def _open_delivery(self, roster: Roster, delivery: ShareDelivery) -> dict[str, _Held]:
        """The shares from U2 (the delivery's senders), which must be at least threshold - 1."""
        if delivery.receiver != self.site_id:
            raise SecAggProtocolError("A share delivery reached the wrong site.")
        senders = check_members(
            "The share delivery",
            [envelope.sender for envelope in delivery.envelopes],
            set(roster.ids) - {self.site_id},
        )
        check_quorum("share-keys", len(senders) + 1, len(roster.ids), self.config.threshold)
        return {
            envelope.sender: self._open(roster.advert(envelope.sender), envelope)
            for envelope in delivery.envelopes
        }

    def unmask(self, request: UnmaskRequest) -> UnmaskAnswer:
        """Seed shares of the survivors, key shares of the sites that dropped before masking."""
        self._expect(_Stage.MASKED)
        holders = set(self._held)
        survivors = check_members("The unmask request", request.survivors, holders)
        if self.site_id not in survivors:
            raise SecAggProtocolError("The unmask request leaves out this site's own input.")
        check_quorum("unmask", len(survivors), len(holders), self.config.threshold)
        dropped = sorted(holders - set(survivors))
        self._reveal(survivors, dropped)
        return UnmaskAnswer(
            self.site_id,
            tuple((owner, self._held[owner].seed) for owner in sorted(survivors)),
            tuple((owner, self._held[owner].key) for owner in dropped),
        )

    def _reveal(self, survivors: list[str], dropped: list[str]) -> None:
        """Record what is revealed, refusing first if any peer would lose both secrets."""
        conflicts = [p for p in survivors if self._revealed.get(p) is _Revealed.KEY]
        conflicts += [p for p in dropped if self._revealed.get(p) is _Revealed.SEED]
        if conflicts:
            raise UnmaskRefused(self.site_id, conflicts)
        self._revealed.update({p: _Revealed.SEED for p in survivors})
        self._revealed.update({p: _Revealed.KEY for p in dropped})

    def _seal(self, peer: KeyAdvert, key_share: int, seed_share: int) -> Envelope:
        info = self.config.binding.info(Purpose.ENVELOPE, self.site_id, peer.site_id)
        plaintext = b"".join(y.to_bytes(shamir.SHARE_BYTES, "big") for y in (key_share, seed_share))
        key = agree(self._encryption, peer.encryption_key, info)
        return Envelope(self.site_id, peer.site_id, seal(key, plaintext, info))

    def _open(self, peer: KeyAdvert, envelope: Envelope) -> _Held:
        if envelope.receiver != self.site_id:
            raise SecAggProtocolError("A share envelope is addressed to another site.")
        info = self.config.binding.info(Purpose.ENVELOPE, peer.site_id, self.site_id)
        plaintext = open_sealed(
            agree(self._encryption, peer.encryption_key, info), envelope.sealed, info
        )
        if len(plaintext) != 2 * shamir.SHARE_BYTES:
            raise SecAggProtocolError("A share envelope holds the wrong number of bytes.")
        half = shamir.SHARE_BYTES
        key, seed = int.from_bytes(plaintext[:half], "big"), int.from_bytes(plaintext[half:], "big")
        if max(key, seed) >= shamir.PRIME:
            raise SecAggProtocolError("A share envelope holds a value outside the field.")
        return _Held(key, seed)

    def _expect(self, stage: _Stage) -> None:
        if self._stage is not stage:
            raise SecAggProtocolError(
                f"Site {self.site_id} is at {self._stage.name.lower()}, not "
                f"{stage.name.lower()}: secure-aggregation steps run once, in order."
            )

    def _expect_roster(self, stage: _Stage) -> Roster:
        self._expect(stage)
        assert self._roster is not None  # set with the SHARED stage
        return self._roster


def _roster_state(roster: Roster) -> dict[str, Any]:
    adverts = [[a.site_id, a.encryption_key.hex(), a.masking_key.hex()] for a in roster.adverts]
    return {"run": roster.run_id, "round": roster.round, "adverts": adverts}


def _roster_from_state(state: dict[str, Any]) -> Roster:
    adverts = tuple(
        KeyAdvert(site_id, bytes.fromhex(encryption), bytes.fromhex(masking))
        for site_id, encryption, masking in state["adverts"]
    )
    return Roster(str(state["run"]), int(state["round"]), adverts)
