"""A round's train replies against the global model it sent: the sanity gate's refusals
(:mod:`fedscan.server.gate`) before any aggregation sees an update, and the new global model made
whole again when sites train only some parameters (run config ``trainable``).

Invariant: an update is checked against exactly the arrays of this round's train messages — the
trained subset when ``trained_names`` names one — and masked updates (secure aggregation) are left
to the aggregator, which checks what it can of a sum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, Message

from fedscan.common import protocol
from fedscan.common.errors import ErrorCode
from fedscan.server.gate import Candidate, UpdateGate
from fedscan.server.triage import Refusal, SiteNames, first_metrics

log = logging.getLogger(__name__)


def filled(partial: ArrayRecord, base: ArrayRecord) -> ArrayRecord:
    """``partial``'s arrays, and ``base``'s for every name ``partial`` lacks, in ``base``'s order:
    an update of the trained parameters only (run config ``trainable``) made a whole model."""
    return ArrayRecord({key: partial[key] if key in partial else base[key] for key in base})


@dataclass
class UpdateCheck:
    """The global model of the current round and the gate its updates pass."""

    gate: UpdateGate = field(default_factory=UpdateGate)
    # Run config ``trainable``: the parameters sites send back (empty: the whole model); the gate
    # expects exactly these, and the aggregate keeps the global model's values for the rest.
    trained_names: tuple[str, ...] = ()
    masked: bool = False  # secure aggregation: replies carry no update for the gate to check
    _sent: dict[str, Any] | None = None
    _sent_record: ArrayRecord | None = None

    def expect(self, arrays: ArrayRecord) -> None:
        """The global model this round's train messages carry."""
        self._sent = {key: value.numpy() for key, value in arrays.to_torch_state_dict().items()}
        self._sent_record = arrays

    def refusals(self, replies: Iterable[Message], names: SiteNames) -> list[Refusal]:
        """One refusal per update the gate refuses (each logged), none for masked updates."""
        if self._sent is None or self.masked:
            return []
        candidates = [
            Candidate(
                names.of(reply),
                {
                    key: value.numpy()
                    for key, value in reply.content.array_records[protocol.ARRAYS]
                    .to_torch_state_dict()
                    .items()
                },
                int(first_metrics(reply).get(protocol.NUM_EXAMPLES, 0)),
            )
            for reply in replies
        ]
        refused = self.gate.refusals(candidates, self._expected())
        for site, reason in refused.items():
            log.warning("Site %s refused train: %s", site, reason)
        return [
            Refusal(site, "train", f"{ErrorCode.UPDATE_REJECTED}: {reason}")
            for site, reason in refused.items()
        ]

    def _expected(self) -> dict[str, Any]:
        assert self._sent is not None
        if not self.trained_names:
            return self._sent
        return {key: self._sent[key] for key in self.trained_names}

    def completed(self, aggregate: ArrayRecord | None) -> ArrayRecord | None:
        """The new global model: the aggregate of what trained, the current global model's
        values for the rest (in the model's order)."""
        if aggregate is None or not self.trained_names or self._sent_record is None:
            return aggregate
        return filled(aggregate, self._sent_record)
