"""A training round under secure aggregation: the coordinator learns the sum, never one update.

    train (every site)        -> metrics, evaluation, key advert; no arrays (the update stays)
    train.secagg_share_keys   the roster (U1)            -> each site's sealed shares
    train.secagg_mask         each site's share delivery -> its masked input (U2 -> U3)
    train.secagg_unmask       the unmask request (U3)    -> shares of seeds and dropped keys
    SecAggAggregator.finish   -> the survivors' weighted sum of updates (trained − sent model)

Invariants:

- every exchange goes through the run's Grid with the round's timeout; a site that does not answer
  by then, answers with an error or sends a malformed message has dropped at that stage, and the
  round aborts (:class:`~fedscan.common.secagg.SecAggAborted`, ``quorum-lost``, the run fails)
  when fewer than the threshold are left;
- a site's secure-aggregation id is its Flower node id (the Grid's, not one the site chose); the
  threshold is n // 2 + 1 (at least 2) for the n sites whose adverts were accepted;
- the new global model is the sent model plus the weighted mean update, each parameter cast back
  to its own dtype, handed to the strategy as one aggregate
  (:meth:`~fedscan.server.strategy.RecordingMixin.aggregate_mean`): FedAvg and FedProx keep it,
  FedAdam steps its server optimiser towards it, central DP adds its noise for the sites summed
  (each site clipped its own update to central DP's bound and weighed it 1);
- the extra exchanges' wall time counts in the round's ``train_s`` (metrics.jsonl).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedscan import secagg_records as records
from fedscan.common import protocol
from fedscan.common.secagg import (
    KeyAdvert,
    MaskedInput,
    SecAggAggregator,
    SecAggConfig,
    SecAggProtocolError,
    SecAggResult,
)
from fedscan.common.secagg.config import MIN_THRESHOLD
from fedscan.server.run_log import RunLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecureExchange:
    """What the round's extra exchanges share."""

    grid: Grid
    timeout: float
    message_config: dict[str, Any]
    server_round: int
    threshold: int = 0

    def send(self, action: str, records_by_node: Mapping[int, RecordDict]) -> dict[int, Message]:
        """One exchange: node -> its reply, for the nodes that answered without an error."""
        config = {
            **self.message_config,
            protocol.SERVER_ROUND: self.server_round,
            protocol.SECAGG_THRESHOLD: self.threshold,
        }
        messages = []
        for node, content in records_by_node.items():
            content[protocol.CONFIG] = ConfigRecord(dict(config))
            kind = f"{MessageType.TRAIN}.{action}"
            messages.append(Message(content=content, dst_node_id=node, message_type=kind))
        answered = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("Node %s dropped at %s: %s", node, action, reply.error.reason)
            else:
                answered[node] = reply
        return answered


def secure_aggregate(
    strategy: Any,
    grid: Grid,
    run_log: RunLog,
    *,
    server_round: int,
    arrays: ArrayRecord,
    replies: list[Message],
    timeout: float,
    message_config: dict[str, Any],
    bound: float,
) -> ArrayRecord | None:
    """The round's new global model from the sites' masked updates, each clipped to ``bound``
    by its site (see the module docstring)."""
    accepted = run_log.accept(server_round, "train", replies)
    adverts = {reply.metadata.src_node_id: reply for reply in accepted}
    exchange = SecureExchange(grid, timeout, message_config, server_round)
    result = _run_protocol(exchange, adverts, _dimension(arrays), bound)
    log.info(
        "Round %s: secure aggregation summed %s sites (%s dropped after sharing keys)",
        server_round,
        len(result.survivors),
        len(result.dropped),
    )
    run_log.secure_aggregated(
        {
            "summed": len(result.survivors),
            "dropped": len(result.dropped),
            "mean_error_bound": result.mean_error_bound,
        }
    )
    mean = new_arrays(arrays, result.mean)
    return strategy.aggregate_mean(server_round, mean, summed=len(result.survivors))


def _run_protocol(
    exchange: SecureExchange, adverts: dict[int, Message], dimension: int, bound: float
) -> SecAggResult:
    ids = {node: str(node) for node in adverts}
    threshold = max(MIN_THRESHOLD, len(adverts) // 2 + 1)
    run_id = str(exchange.message_config[protocol.RUN_ID])
    config = SecAggConfig(run_id, exchange.server_round, dimension, threshold, bound)
    aggregator = SecAggAggregator(config)
    exchange = replace(exchange, threshold=threshold)
    _take(adverts, ids, lambda node, reply: aggregator.add_advert(_advert(node, reply)))
    roster = aggregator.close_adverts()
    members = [node for node in adverts if ids[node] in roster.ids]
    bundles = exchange.send(
        protocol.SECAGG_SHARE_ACTION, {n: _content(records.roster_record(roster)) for n in members}
    )
    _take(bundles, ids, lambda n, r: aggregator.add_shares(records.read_bundle(_record(r), ids[n])))
    by_id = {site: node for node, site in ids.items()}
    deliveries = {
        by_id[site]: _content(records.envelopes_record(delivery.envelopes))
        for site, delivery in aggregator.close_shares().items()
    }
    masked = exchange.send(protocol.SECAGG_MASK_ACTION, deliveries)
    _take(masked, ids, lambda n, r: aggregator.add_masked_input(_masked(r, ids[n])))
    request = aggregator.close_masked_inputs()
    asked = {by_id[site]: _content(records.request_record(request)) for site in request.survivors}
    answers = exchange.send(protocol.SECAGG_UNMASK_ACTION, asked)
    _take(answers, ids, lambda n, r: aggregator.add_answer(records.read_answer(_record(r), ids[n])))
    return aggregator.finish()


def _take(
    replies: dict[int, Message], ids: dict[int, str], add: Callable[[int, Message], None]
) -> None:
    """Hand each reply to the aggregator; a malformed one drops its site (logged)."""
    for node, reply in replies.items():
        if node not in ids:
            continue
        try:
            add(node, reply)
        except SecAggProtocolError as error:
            log.warning("Site %s dropped from secure aggregation: %s", ids[node], error)


def _advert(node: int, reply: Message) -> KeyAdvert:
    advert = records.read_advert(_record(reply))
    if advert.site_id != str(node):
        raise SecAggProtocolError(f"Node {node} advertised keys under another id.")
    return advert


def _masked(reply: Message, site_id: str) -> MaskedInput:
    if protocol.SECAGG_MASKED not in reply.content.array_records:
        raise SecAggProtocolError(f"Site {site_id} sent no masked input.")
    return records.read_masked(reply.content.array_records[protocol.SECAGG_MASKED], site_id)


def _record(reply: Message) -> ConfigRecord:
    if protocol.SECAGG not in reply.content.config_records:
        raise SecAggProtocolError("A secure-aggregation reply lacks its record.")
    return reply.content.config_records[protocol.SECAGG]


def _content(record: ConfigRecord) -> RecordDict:
    return RecordDict({protocol.SECAGG: record})


def _dimension(arrays: ArrayRecord) -> int:
    return sum(int(np.prod(array.shape)) for array in arrays.values())


def new_arrays(sent: ArrayRecord, mean: np.ndarray) -> ArrayRecord:
    """``sent`` plus the mean update (parameters in name order, as sites flatten them), each
    parameter in its own dtype (integers rounded)."""
    updated, offset = {}, 0
    for key in sorted(sent):
        value = sent[key].numpy()
        step = mean[offset : offset + value.size].reshape(value.shape)
        offset += value.size
        new = value.astype(np.float64) + step
        if not np.issubdtype(value.dtype, np.floating):
            new = np.rint(new)
        updated[key] = new.astype(value.dtype)
    return ArrayRecord({key: Array(updated[key]) for key in sent})
