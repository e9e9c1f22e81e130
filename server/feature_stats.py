"""The coordinator's side of federated feature standardisation (classical models only).

Before round 1, every connected site is asked for its feature sums (see
:mod:`fedscan.common.models.feature_stats`); their sum gives the mean and standard
deviation that the initial global model's ``feature_mean`` / ``feature_scale``
buffers take. Sites that refuse are noted; fewer than ``min-sites`` answers
end the run.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.errors import ErrorCode, FedscanError
from fedscan.common.models.classical_model import MEAN_KEY, SCALE_KEY
from fedscan.common.models.feature_stats import FeatureSums, model_norm_bound, standardisation
from fedscan.server.run_log import RunLog
from fedscan.server.triage import triage

log = logging.getLogger(__name__)


def standardise(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    arrays: ArrayRecord,
    message_config: dict[str, Any],
) -> ArrayRecord:
    """``arrays`` with the standardisation buffers set from every answering site's sums."""
    state = arrays.to_torch_state_dict()
    dimension = state[MEAN_KEY].shape[0]
    parts = _collect_sums(grid, config, run_log, message_config, dimension)
    clip = model_norm_bound(config.train.model, config.train.classical, dimension)
    mean, scale = standardisation(parts, clip_norm=clip)
    state[MEAN_KEY], state[SCALE_KEY] = torch.from_numpy(mean), torch.from_numpy(scale)
    log.info(
        "Features standardised with statistics from %s sites (%s images)",
        len(parts),
        sum(part.count for part in parts),
    )
    return ArrayRecord(state)


def _collect_sums(
    grid: Grid, config: RunConfig, run_log: RunLog, message_config: dict[str, Any], dimension: int
) -> list[FeatureSums]:
    """Every site's sums; fewer than min-sites usable answers end the run (quorum-lost)."""
    request = ConfigRecord({**message_config, protocol.SERVER_ROUND: protocol.STATS_ROUND})
    message_type = f"{MessageType.QUERY}.{protocol.STATS_ACTION}"
    messages = [
        Message(
            content=RecordDict({protocol.CONFIG: request}),
            dst_node_id=node,
            message_type=message_type,
        )
        for node in sorted(grid.get_node_ids())
    ]
    replies = grid.send_and_receive(messages, timeout=config.round_timeout_s)
    accepted, refusals = triage(replies, run_log.names, "feature statistics")
    refused = [f"{refusal.site}: {refusal.reason}" for refusal in refusals]
    parts = []
    for reply in accepted:
        part = _sums(reply, dimension)
        if part is None:
            refused.append(f"{run_log.site_name(reply)}: malformed statistics")
        else:
            parts.append(part)
    if len(parts) < config.min_sites:
        raise FedscanError(
            f"Only {len(parts)} of the required {config.min_sites} sites sent feature "
            f"statistics ({'; '.join(refused) or 'no replies'}).",
            code=ErrorCode.QUORUM_LOST,
        )
    for note in refused:
        log.warning("No feature statistics from %s", note)
    return parts


def _sums(reply: Message, dimension: int) -> FeatureSums | None:
    try:
        arrays = reply.content.array_records[protocol.ARRAYS]
        sums = {key: array.numpy() for key, array in arrays.items()}
        count = reply.content.metric_records[protocol.METRICS][protocol.NUM_EXAMPLES]
    except (KeyError, ValueError, TypeError):
        return None
    if isinstance(count, bool) or not isinstance(count, (int, float)):
        return None
    count = int(count)
    if (
        set(sums) != set(protocol.STATS_ARRAYS)
        or any(v.shape != (dimension,) for v in sums.values())
        or count < 1
    ):
        return None
    return FeatureSums(
        sums[protocol.STATS_SUM].astype("float64"),
        sums[protocol.STATS_SQUARES].astype("float64"),
        count,
    )
