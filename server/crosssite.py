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

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.metrics.crosssite import CrossSiteMatrix, SiteEvaluation, build_matrix
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import MATRIX_FILE, RunDirectory
from fedscan.server.triage import first_metrics, triage

log = logging.getLogger(__name__)


def fine_tunes_locally(config: RunConfig) -> bool:
    """Local models travel only under DP, like every update: with central DP but no site DP, a
    site's locally fine-tuned model would leave unprotected, so only the global model is
    cross-evaluated."""
    return config.privacy.enabled or not config.central_dp


def cross_site_validation(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    global_arrays: ArrayRecord,
    message_config: dict[str, Any],
    run_dir: RunDirectory,
) -> CrossSiteMatrix:
    """Fine-tune locally, evaluate every model at every site, write ``cross_site.json``."""
    nodes = sorted(grid.get_node_ids())
    notes: list[str] = []
    epsilon: dict[str, float] = {}
    models = {protocol.GLOBAL_MODEL: global_arrays}
    if fine_tunes_locally(config):
        models.update(
            _fine_tune(grid, nodes, config, run_log, global_arrays, message_config, notes, epsilon)
        )
    else:
        notes.append(
            "No local models: site DP is off, so they could only leave a site unprotected."
        )
    request = {**message_config, protocol.THRESHOLD: run_log.threshold}
    results = _evaluate_everywhere(grid, nodes, config, run_log, models, request, notes)
    matrix = build_matrix(
        results, models=list(models), threshold=run_log.threshold, notes=notes, epsilon=epsilon
    )
    run_dir.write_json(MATRIX_FILE, matrix.to_json())
    log.info("Cross-site validation: %s models × %s sites", len(models), len(results))
    return matrix


def _evaluate_everywhere(
    grid: Grid,
    nodes: list[int],
    config: RunConfig,
    run_log: RunLog,
    models: dict[str, ArrayRecord],
    request: dict[str, Any],
    notes: list[str],
) -> dict[str, dict[str, SiteEvaluation]]:
    """Every model, in one message, at every site: results[site][model]; refusals in ``notes``."""
    content = RecordDict({protocol.CONFIG: ConfigRecord(request), **models})
    message_type = f"{MessageType.EVALUATE}.{protocol.CROSS_SITE_ACTION}"
    messages = [
        Message(content=content, dst_node_id=node, message_type=message_type) for node in nodes
    ]
    replies = grid.send_and_receive(messages, timeout=config.round_timeout_s)
    accepted, refusals = triage(replies, run_log.names, "cross-site evaluation")
    notes += [f"{refusal.site} did not evaluate: {refusal.reason}" for refusal in refusals]
    results = {}
    for reply in accepted:
        site = run_log.site_name(reply)
        records = reply.content.metric_records
        try:
            results[site] = {name: _evaluation(records[name]) for name in models if name in records}
        except (KeyError, ValueError) as error:
            notes.append(
                f"{site} sent a malformed cross-site reply ({type(error).__name__}); ignored"
            )
    return results


def _fine_tune(
    grid: Grid,
    nodes: list[int],
    config: RunConfig,
    run_log: RunLog,
    global_arrays: ArrayRecord,
    message_config: dict[str, Any],
    notes: list[str],
    epsilon: dict[str, float],
) -> dict[str, ArrayRecord]:
    """Each site's model after one DP round of local training from the final global model;
    ``epsilon`` receives each site's ε for the run once that release is counted."""
    train_config = ConfigRecord({**message_config, protocol.SERVER_ROUND: config.rounds + 1})
    messages = [
        Message(
            content=RecordDict({protocol.ARRAYS: global_arrays, protocol.CONFIG: train_config}),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
        )
        for node in nodes
    ]
    accepted, refusals = triage(
        grid.send_and_receive(messages, timeout=config.round_timeout_s),
        run_log.names,
        "the local fine-tune",
    )
    notes += [f"{refusal.site} did not fine-tune: {refusal.reason}" for refusal in refusals]
    local: dict[str, ArrayRecord] = {}
    for reply in accepted:
        site = run_log.site_name(reply)
        local[protocol.local_model_name(site)] = reply.content.array_records[protocol.ARRAYS]
        epsilon[site] = float(first_metrics(reply).get(protocol.EPSILON, float("nan")))
    return dict(sorted(local.items()))


def _evaluation(record: Any) -> SiteEvaluation:
    metrics = dict(record)
    histogram = ScoreHistogram.from_lists(
        {key: metrics.pop(key) for key in protocol.HISTOGRAM_KEYS}
    )
    return SiteEvaluation(metrics, histogram)
