"""The round loop: one exchange per round, not two.

Flower's ``Strategy.start`` sends every round twice to every site — train,
then evaluate the new aggregate — and in a deployment each exchange costs a
SuperNode poll, a fresh ClientApp process and a reply poll. Here the
evaluation of round r's aggregate rides on round r+1's train message: the
site scores the model it receives on its validation data before training on
it, and returns both. Only the last round's aggregate needs a separate
evaluate exchange, which needs every site it is sent to and every site that
trained in the last round (one it misses is a gap of the run). The strategy's
own ``configure_train``, ``aggregate_train`` (FedAvg, FedProx, FedAdam,
central DP) and ``configure_evaluate`` do the rest. Under secure aggregation the train replies
carry no update: :mod:`fedscan.server.secure_rounds` runs the round's extra exchanges and hands
the strategy the sites' weighted mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedscan.common.errors import REPLY_CODES, ErrorCode
from fedscan.common.protocol import EVALUATE_FIRST
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import PHASE_APPROVAL, PHASE_ROUND, Event

log = logging.getLogger(__name__)


RoundHook = Callable[[int, ArrayRecord], None]
# A site's operator approves by hand: a resend every 10 s is prompt enough and a small request.
APPROVAL_POLL_S = 10.0
Progress = Callable[..., None]  # (event, *, phase=None, **counts): see rundir.RunProgress


@dataclass(frozen=True)
class _Exchange:
    """What every exchange of one run's round loop shares."""

    strategy: Strategy
    grid: Grid
    run_log: RunLog
    timeout: float
    message_config: dict[str, Any]
    tell: Progress
    wait_for_sites: Callable[[int], object] | None = None  # before a round is sent again
    approval_wait_s: float = 0.0  # join-timeout-s: how long a round waits for sites' approvals
    secure_bound: float | None = None  # secure aggregation: sites clip their updates to it


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    run_log: RunLog,
    *,
    initial_arrays: ArrayRecord,
    rounds: int,
    timeout: float,
    message_config: dict[str, Any],
    first_round: int = 1,
    before_round: Callable[[int], object] | None = None,
    after_round: RoundHook | None = None,
    progress: Progress | None = None,
    approval_wait_s: float = 0.0,
    secure_bound: float | None = None,
) -> ArrayRecord:
    """Train rounds ``first_round``..``rounds`` from ``initial_arrays`` (the global model after
    round ``first_round - 1``); every aggregate is evaluated at every site. The final arrays.

    ``before_round`` may wait for sites (or end the run); ``after_round`` sees each new global model
    (the coordinator checkpoints it there); ``progress`` hears each round sent and aggregated.
    ``secure_bound``: the rounds are securely aggregated, each site clipping its update to it.
    """
    tell: Progress = progress or (lambda *_, **__: None)
    exchange = _Exchange(
        strategy,
        grid,
        run_log,
        timeout,
        message_config,
        tell,
        before_round,
        approval_wait_s,
        secure_bound,
    )
    run_log.check.masked = secure_bound is not None  # sites send masked updates (secure_rounds.py)
    arrays = initial_arrays
    for server_round in range(first_round, rounds + 1):
        log.info("Round %s of %s", server_round, rounds)
        if before_round is not None:
            before_round(server_round)
        arrays = _train_round(exchange, server_round, rounds, arrays)
        if after_round is not None:
            after_round(server_round, arrays)
    _final_evaluation(exchange, rounds, arrays)
    return arrays


def _train_round(
    exchange: _Exchange, server_round: int, rounds: int, arrays: ArrayRecord
) -> ArrayRecord:
    """One train exchange, carrying the previous aggregate's evaluation; the new aggregate (the
    old one when no update counted)."""
    run_log = exchange.run_log
    replies = _send_train(exchange, server_round, rounds, arrays)
    if _resend_worth_it(replies, run_log.min_sites) and exchange.wait_for_sites is not None:
        # A restarted coordinator's database lists sites as online until their heartbeats lapse;
        # a round sent meanwhile comes back "Node Unavailable" from sites still reconnecting.
        # Sent again once: a site that had already released replays its stored update.
        unavailable = sum(_unavailable(reply) for reply in replies)
        log.warning("Round %s: %s sites unavailable; sending it again", server_round, unavailable)
        exchange.tell(Event.ROUND_RESENT, round=server_round, unavailable=unavailable)
        exchange.wait_for_sites(server_round)
        replies = _send_train(exchange, server_round, rounds, arrays)
    replies = _wait_for_approvals(exchange, server_round, rounds, arrays, replies)
    if server_round > 1:  # the previous aggregate, scored by each site
        run_log.take_evaluations(server_round - 1, replies)
    aggregated = _aggregate(exchange, server_round, arrays, replies)
    exchange.tell(
        Event.ROUND_AGGREGATED, round=server_round, rounds=rounds, trained=run_log.trained
    )
    return aggregated if aggregated is not None else arrays


def _aggregate(
    exchange: _Exchange, server_round: int, arrays: ArrayRecord, replies: list[Message]
) -> ArrayRecord | None:
    """The strategy's aggregate of the round's updates, or of their masked sum (secure)."""
    if exchange.secure_bound is None:
        return exchange.strategy.aggregate_train(server_round, replies)[0]
    from fedscan.server.secure_rounds import secure_aggregate

    return secure_aggregate(
        exchange.strategy,
        exchange.grid,
        exchange.run_log,
        server_round=server_round,
        arrays=arrays,
        replies=replies,
        timeout=exchange.timeout,
        message_config=exchange.message_config,
        bound=exchange.secure_bound,
    )


def _send_train(
    exchange: _Exchange, server_round: int, rounds: int, arrays: ArrayRecord
) -> list[Message]:
    config = ConfigRecord({**exchange.message_config, EVALUATE_FIRST: server_round > 1})
    exchange.run_log.expect(arrays)
    messages = list(exchange.strategy.configure_train(server_round, arrays, config, exchange.grid))
    exchange.tell(
        Event.ROUND_TRAINING,
        phase=PHASE_ROUND,
        round=server_round,
        rounds=rounds,
        sites=len(messages),
    )
    return list(exchange.grid.send_and_receive(messages, timeout=exchange.timeout))


def _wait_for_approvals(
    exchange: _Exchange, server_round: int, rounds: int, arrays: ArrayRecord, replies: list[Message]
) -> list[Message]:
    """A round short of its quorum only because sites have not approved the run yet is sent again
    every ``APPROVAL_POLL_S`` until they have, or ``approval_wait_s`` (join-timeout-s) passed. A
    site that trained already answers from its stored release: nothing is spent twice."""
    deadline = time.monotonic() + exchange.approval_wait_s
    names = exchange.run_log.names
    while _short_of_approvals(replies, exchange.run_log.min_sites):
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            break
        pending = sorted(names.of(reply) for reply in replies if _pending_approval(reply))
        log.warning("Round %s: waiting for %s sites to approve the run", server_round, pending)
        exchange.tell(
            Event.WAITING_FOR_APPROVAL,
            phase=PHASE_APPROVAL,
            round=server_round,
            pending=len(pending),
            sites=", ".join(pending),
            left_s=round(left_s),
        )
        time.sleep(min(APPROVAL_POLL_S, left_s))
        replies = _send_train(exchange, server_round, rounds, arrays)
    return replies


def _pending_approval(reply: Message) -> bool:
    return reply.has_error() and reply.error.code == REPLY_CODES[ErrorCode.RUN_NOT_APPROVED][0]


def _short_of_approvals(replies: list[Message], min_sites: int) -> bool:
    answered = sum(not reply.has_error() for reply in replies)
    return answered < min_sites <= answered + sum(_pending_approval(r) for r in replies)


def _unavailable(reply: Message) -> bool:
    return reply.has_error() and reply.error.code == FlowerErrorCode.NODE_UNAVAILABLE


def _resend_worth_it(replies: list[Message], min_sites: int) -> bool:
    """The round missed its quorum only because sites were unavailable (not because they
    refused), and those sites would make it."""
    answered = sum(not reply.has_error() for reply in replies)
    unavailable = sum(_unavailable(reply) for reply in replies)
    return answered < min_sites <= answered + unavailable


def _final_evaluation(exchange: _Exchange, rounds: int, arrays: ArrayRecord) -> None:
    """The last aggregate at every site (it needs every site that trained in the last round)."""
    strategy, run_log, grid = exchange.strategy, exchange.run_log, exchange.grid
    config = ConfigRecord(dict(exchange.message_config))
    messages = list(strategy.configure_evaluate(rounds, arrays, config, grid))
    exchange.tell(Event.FINAL_EVALUATION, sites=len(messages))
    strategy.aggregate_evaluate(
        rounds, list(grid.send_and_receive(messages, timeout=exchange.timeout))
    )
    run_log.check_final_evaluation([m.metadata.dst_node_id for m in messages], exchange.timeout)
    evaluated = len(run_log.history[-1].get("evaluate", {})) if run_log.history else 0
    exchange.tell(Event.FINAL_EVALUATED, evaluated=evaluated, sites=len(messages))
