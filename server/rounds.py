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
central DP) and ``configure_evaluate`` do the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedscan.common.protocol import EVALUATE_FIRST
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import PHASE_ROUND, Event

log = logging.getLogger(__name__)


RoundHook = Callable[[int, ArrayRecord], None]
Progress = Callable[..., None]  # (event, *, phase=None, **counts): see rundir.RunProgress


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
) -> ArrayRecord:
    """Train rounds ``first_round``..``rounds`` from ``initial_arrays`` (the global model after
    round
    ``first_round - 1``); every aggregate is evaluated at every site. The final arrays.

    ``before_round`` may wait for sites (or end the run); ``after_round`` sees each new global model
    (the coordinator checkpoints it there); ``progress`` hears each round sent and aggregated.
    """
    tell: Progress = progress or (lambda *_, **__: None)
    arrays = initial_arrays
    for server_round in range(first_round, rounds + 1):
        log.info("Round %s of %s", server_round, rounds)
        if before_round is not None:
            before_round(server_round)
        config = ConfigRecord({**message_config, EVALUATE_FIRST: server_round > 1})
        run_log.expect(arrays)
        messages = list(strategy.configure_train(server_round, arrays, config, grid))
        tell(
            Event.ROUND_TRAINING,
            phase=PHASE_ROUND,
            round=server_round,
            rounds=rounds,
            sites=len(messages),
        )
        replies: list[Message] = list(grid.send_and_receive(messages, timeout=timeout))
        if server_round > 1:
            run_log.take_evaluations(
                server_round - 1, replies
            )  # the previous aggregate, scored by each site
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        tell(Event.ROUND_AGGREGATED, round=server_round, rounds=rounds, trained=run_log.trained)
        if after_round is not None:
            after_round(server_round, arrays)
    messages = list(
        strategy.configure_evaluate(rounds, arrays, ConfigRecord(dict(message_config)), grid)
    )
    tell(Event.FINAL_EVALUATION, sites=len(messages))
    strategy.aggregate_evaluate(rounds, list(grid.send_and_receive(messages, timeout=timeout)))
    run_log.check_final_evaluation([m.metadata.dst_node_id for m in messages], timeout)
    evaluated = len(run_log.history[-1].get("evaluate", {})) if run_log.history else 0
    tell(Event.FINAL_EVALUATED, evaluated=evaluated, sites=len(messages))
    return arrays
