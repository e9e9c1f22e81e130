"""One secure-aggregation round with every party in this process, for tests and benchmarks.

Invariants: the driver only routes, so each party sees exactly what a transport would carry; a
site in ``drop_before_masking`` sends its shares and then nothing (its update is not in the
sum), one in ``drop_after_masking`` sends its masked input and then nothing (its update is in
the sum, recovered from the others' answers). The observer is told of every step: the party,
the step, its wall time and the payload bytes it sent (a broadcast counts once per receiver).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TypeVar

import numpy as np

from fedscan.common.secagg.aggregator import SecAggAggregator
from fedscan.common.secagg.config import SecAggConfig
from fedscan.common.secagg.messages import Roster, SecAggResult, ShareDelivery, UnmaskRequest
from fedscan.common.secagg.site import SecAggSite

AGGREGATOR = "aggregator"
Message = TypeVar("Message")


class StepName(StrEnum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share-keys"
    MASK = "mask"
    UNMASK = "unmask"
    RECEIVE = "receive"  # the aggregator's checks of one incoming message
    BROADCAST_ROSTER = "broadcast-roster"
    ROUTE_SHARES = "route-shares"
    REQUEST_UNMASK = "request-unmask"
    FINISH = "finish"


@dataclass(frozen=True)
class Step:
    party: str
    name: StepName
    seconds: float
    sent_bytes: int


Observer = Callable[[Step], None]


def _payload(message: object) -> int:
    return int(getattr(message, "nbytes", 0))


def _nothing(message: object) -> int:
    return 0


@dataclass(frozen=True)
class _Clock:
    observe: Observer

    def run(
        self,
        party: str,
        name: StepName,
        call: Callable[[], Message],
        sent: Callable[[Message], int] = _payload,
    ) -> Message:
        started = time.perf_counter()
        message = call()
        self.observe(Step(party, name, time.perf_counter() - started, sent(message)))
        return message


def run_in_process(
    config: SecAggConfig,
    inputs: Mapping[str, tuple[np.ndarray, int]],
    *,
    drop_before_masking: Collection[str] = (),
    drop_after_masking: Collection[str] = (),
    observe: Observer | None = None,
) -> SecAggResult:
    """The round's result for ``inputs`` (site id -> (update, weight))."""
    parties = _Parties(
        _Clock(observe or _ignore),
        {site_id: SecAggSite(site_id, config) for site_id in inputs},
        SecAggAggregator(config),
    )
    deliveries = parties.exchange_keys()
    maskers = {s: inputs[s] for s in deliveries if s not in drop_before_masking}
    request = parties.mask(deliveries, maskers)
    return parties.unmask(request, [s for s in request.survivors if s not in drop_after_masking])


@dataclass(frozen=True)
class _Parties:
    """Every party of the round, and the clock that times their steps."""

    clock: _Clock
    sites: dict[str, SecAggSite]
    aggregator: SecAggAggregator

    def exchange_keys(self) -> dict[str, ShareDelivery]:
        """Adverts, the roster to every site, bundles, and the deliveries to route."""
        clock, aggregator = self.clock, self.aggregator
        for site_id, site in self.sites.items():
            advert = clock.run(site_id, StepName.ADVERTISE, site.advertise)
            clock.run(
                AGGREGATOR, StepName.RECEIVE, partial(aggregator.add_advert, advert), _nothing
            )
        roster = clock.run(
            AGGREGATOR, StepName.BROADCAST_ROSTER, aggregator.close_adverts, _per_site_roster
        )
        for site_id, site in self.sites.items():
            bundle = clock.run(site_id, StepName.SHARE_KEYS, partial(site.share_keys, roster))
            clock.run(
                AGGREGATOR, StepName.RECEIVE, partial(aggregator.add_shares, bundle), _nothing
            )
        return clock.run(AGGREGATOR, StepName.ROUTE_SHARES, aggregator.close_shares, _all_routed)

    def mask(
        self, deliveries: dict[str, ShareDelivery], maskers: dict[str, tuple[np.ndarray, int]]
    ) -> UnmaskRequest:
        """The maskers' masked inputs, then the unmask request."""
        clock, aggregator = self.clock, self.aggregator
        for site_id, (update, weight) in maskers.items():
            masking = partial(self.sites[site_id].mask, deliveries[site_id], update, weight)
            masked = clock.run(site_id, StepName.MASK, masking)
            receive = partial(aggregator.add_masked_input, masked)
            clock.run(AGGREGATOR, StepName.RECEIVE, receive, _nothing)
        closing = aggregator.close_masked_inputs
        return clock.run(AGGREGATOR, StepName.REQUEST_UNMASK, closing, _per_survivor_request)

    def unmask(self, request: UnmaskRequest, answering: list[str]) -> SecAggResult:
        clock, aggregator = self.clock, self.aggregator
        for site_id in answering:
            answer = clock.run(
                site_id, StepName.UNMASK, partial(self.sites[site_id].unmask, request)
            )
            clock.run(
                AGGREGATOR, StepName.RECEIVE, partial(aggregator.add_answer, answer), _nothing
            )
        return clock.run(AGGREGATOR, StepName.FINISH, aggregator.finish, _nothing)


def _per_site_roster(roster: Roster) -> int:
    return roster.nbytes * len(roster.ids)  # broadcast to every site of the roster


def _all_routed(deliveries: dict[str, ShareDelivery]) -> int:
    return sum(delivery.nbytes for delivery in deliveries.values())


def _per_survivor_request(request: UnmaskRequest) -> int:
    return request.nbytes * len(request.survivors)


def _ignore(step: Step) -> None:
    """The default observer."""
