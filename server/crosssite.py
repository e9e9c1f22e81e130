"""Cross-site validation at the end of a run (the coordinator's side).

Two exchanges: each site fine-tunes the final global model once, with DP, as
an ordinary train message for round R+1 (its ledger records that release,
and its noise was calibrated for R+1 releases from the start); then every
site receives the global and all local models in one message and evaluates
each of them. Local models are never aggregated. A site that refuses or
fails is noted in the matrix; it never fails a completed run.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedscan.common.config import RunConfig
from fedscan.common.crosssite import (CROSS_SITE_ACTION, GLOBAL_MODEL, MATRIX_FILE, CrossSiteMatrix,
                                      SiteEvaluation, build_matrix, local_model_name)
from fedscan.common.pooled import ScoreHistogram
from fedscan.server.recorder import RoundRecorder
from fedscan.server.rundir import RunDirectory

log = logging.getLogger(__name__)


def fine_tunes_locally(config: RunConfig) -> bool:
    """Local models travel only under DP, like every update: with central DP but no site DP, a site's
    locally fine-tuned model would leave unprotected, so only the global model is cross-evaluated."""
    return config.privacy.enabled or not config.central_dp


def cross_site_validation(grid: Grid, config: RunConfig, recorder: RoundRecorder, global_arrays: ArrayRecord,
                          message_config: dict[str, Any], run_dir: RunDirectory) -> CrossSiteMatrix:
    """Fine-tune locally, evaluate every model at every site, write ``cross_site.json``."""
    nodes = sorted(grid.get_node_ids())
    notes: list[str] = []
    epsilon: dict[str, float] = {}
    models = {GLOBAL_MODEL: global_arrays}
    if fine_tunes_locally(config):
        models.update(_fine_tune(grid, nodes, config, recorder, global_arrays, message_config, notes, epsilon))
    else:
        notes.append("No local models: site DP is off, so they could only leave a site unprotected.")
    content = RecordDict({"config": ConfigRecord({**message_config, "threshold": recorder.threshold})})
    for name, arrays in models.items():
        content[name] = arrays
    messages = [Message(content=content, dst_node_id=node,
                        message_type=f"{MessageType.EVALUATE}.{CROSS_SITE_ACTION}") for node in nodes]
    results = {}
    for reply in grid.send_and_receive(messages, timeout=config.round_timeout_s):
        site = recorder.site_name(reply)
        if reply.has_error():
            notes.append(f"{site} did not evaluate: {reply.error.reason}")
            continue
        try:
            results[site] = {name: _evaluation(reply.content[name]) for name in models if name in reply.content}
        except (KeyError, ValueError) as error:
            notes.append(f"{site} sent a malformed cross-site reply ({type(error).__name__}); ignored")
    matrix = build_matrix(results, models=list(models), threshold=recorder.threshold, notes=notes,
                          epsilon=epsilon)
    run_dir.write_json(MATRIX_FILE, matrix.to_json())
    log.info("Cross-site validation: %s models × %s sites", len(models), len(results))
    return matrix


def _fine_tune(grid: Grid, nodes: list[int], config: RunConfig, recorder: RoundRecorder,
               global_arrays: ArrayRecord, message_config: dict[str, Any], notes: list[str],
               epsilon: dict[str, float]) -> dict[str, ArrayRecord]:
    """Each site's model after one DP round of local training from the final global model;
    ``epsilon`` receives each site's ε for the run once that release is counted."""
    train_config = ConfigRecord({**message_config, "server-round": config.rounds + 1})
    messages = [Message(content=RecordDict({"arrays": global_arrays, "config": train_config}), dst_node_id=node,
                        message_type=MessageType.TRAIN) for node in nodes]
    local: dict[str, ArrayRecord] = {}
    for reply in grid.send_and_receive(messages, timeout=config.round_timeout_s):
        site = recorder.site_name(reply)
        if reply.has_error():
            notes.append(f"{site} did not fine-tune: {reply.error.reason}")
            continue
        local[local_model_name(site)] = reply.content["arrays"]
        epsilon[site] = float(next(iter(reply.content.metric_records.values())).get("epsilon", float("nan")))
    return dict(sorted(local.items()))


def _evaluation(record: Any) -> SiteEvaluation:
    metrics = dict(record)
    histogram = ScoreHistogram.from_lists({key: metrics.pop(key) for key in ("hist-pos", "hist-neg",
                                                                               "hist-score-sum")})
    return SiteEvaluation(metrics, histogram)
