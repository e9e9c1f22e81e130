"""The coordinator's side of federated feature standardisation (classical models only).

Before round 1, every connected site is asked for its feature sums (see
:mod:`fedscan.common.feature_stats`); their sum gives the mean and standard
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

from fedscan.common.classical_model import MEAN_KEY, SCALE_KEY
from fedscan.common.config import RunConfig
from fedscan.common.errors import FedscanError
from fedscan.common.feature_stats import (STATS_ACTION, STATS_ROUND, FeatureSums, model_norm_bound,
                                         standardisation)
from fedscan.server.recorder import RoundRecorder

log = logging.getLogger(__name__)


def standardise(grid: Grid, config: RunConfig, recorder: RoundRecorder, arrays: ArrayRecord,
                message_config: dict[str, Any]) -> ArrayRecord:
    """``arrays`` with the standardisation buffers set from every answering site's sums."""
    content = RecordDict({"config": ConfigRecord({**message_config, "server-round": STATS_ROUND})})
    messages = [Message(content=content, dst_node_id=node, message_type=f"{MessageType.QUERY}.{STATS_ACTION}")
                for node in sorted(grid.get_node_ids())]
    parts, refused = [], []
    state = arrays.to_torch_state_dict()
    dimension = state[MEAN_KEY].shape[0]
    for reply in sorted(grid.send_and_receive(messages, timeout=config.round_timeout_s), key=recorder.site_name):
        site = recorder.site_name(reply)
        part = None if reply.has_error() else _sums(reply, dimension)
        if part is None:
            refused.append(f"{site}: {reply.error.reason if reply.has_error() else 'malformed statistics'}")
        else:
            parts.append(part)
    if len(parts) < config.min_sites:
        raise FedscanError(f"Only {len(parts)} of the required {config.min_sites} sites sent feature statistics "
                           f"({'; '.join(refused) or 'no replies'}).", code="quorum-lost")
    for note in refused:
        log.warning("No feature statistics from %s", note)
    clip = model_norm_bound(config.train.model, config.train.classical, dimension)
    mean, scale = standardisation(parts, clip_norm=clip)
    state[MEAN_KEY], state[SCALE_KEY] = torch.from_numpy(mean), torch.from_numpy(scale)
    log.info("Features standardised with statistics from %s sites (%s images)", len(parts),
             sum(part.count for part in parts))
    return ArrayRecord(state)


def _sums(reply: Message, dimension: int) -> FeatureSums | None:
    try:
        sums = {key: array.numpy() for key, array in reply.content["arrays"].items()}
        count = int(next(iter(reply.content.metric_records.values()))["num-examples"])
    except (KeyError, StopIteration, ValueError):
        return None
    if set(sums) != {"sum", "squares"} or any(v.shape != (dimension,) for v in sums.values()) or count < 1:
        return None
    return FeatureSums(sums["sum"].astype("float64"), sums["squares"].astype("float64"), count)
