"""Cross-site validation at the end of a run (the coordinator's side).

Two exchanges: each site fine-tunes the final global model once, with DP, as
an ordinary train message for round R+1 (its ledger records that release,
and its noise was calibrated for R+1 releases from the start); then every
site receives the global and all local models in one message and evaluates
each of them. Local models are never aggregated. Both phases need every site
(every connected one, and every one that trained in the last round): a site
that refuses, fails or never answers is noted in the matrix and is a gap of
the run (:mod:`fedscan.server.coverage`), which then ends ``completed-with-gaps``
— never ``failed``, since its model is complete — naming the sites whose
fine-tune release went into a matrix that misses sites.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.metrics.classwise import ClassEvidence
from fedscan.common.metrics.crosssite import CrossSiteMatrix, SiteEvaluation, build_matrix
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.metrics.private import NoisyEvaluation
from fedscan.common.tasks import LabelScheme
from fedscan.server.coverage import (
    PHASE_CROSS_SITE_EVALUATION,
    PHASE_FINE_TUNE,
    Gap,
    missing_sites,
    node_name,
)
from fedscan.server.rounds import Progress
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import MATRIX_FILE, Event, RunDirectory
from fedscan.server.triage import Refusal, first_metrics, triage
from fedscan.server.update_check import filled

log = logging.getLogger(__name__)


def fine_tunes_locally(config: RunConfig) -> bool:
    """Local models travel only under DP, like every update: with central DP but no site DP, a
    site's locally fine-tuned model would leave unprotected, so only the global model is
    cross-evaluated."""
    return config.privacy.enabled or not config.central_dp


def needed_sites(grid: Grid, run_log: RunLog) -> tuple[list[str], list[str]]:
    """(the sites cross-site validation needs, those connected now): every connected site and every
    site that trained in the last round."""
    trained = sorted(run_log.history[-1].get("train", {})) if run_log.history else []
    try:
        connected = [node_name(run_log.names, node) for node in sorted(grid.get_node_ids())]
    except Exception:  # a failed exchange may have taken the grid with it
        log.exception("Could not list the connected sites")
        return trained, trained
    return sorted({*connected, *trained}), connected


def cross_site_validation(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    global_arrays: ArrayRecord,
    message_config: dict[str, Any],
    run_dir: RunDirectory,
    progress: Progress | None = None,
) -> CrossSiteMatrix | None:
    """Fine-tune locally, evaluate every model at every site, write ``cross_site.json``; what
    either phase missed goes to ``run_log.gaps``. None when the evaluation exchange failed."""
    tell: Progress = progress or (lambda *_, **__: None)
    nodes = sorted(grid.get_node_ids())
    notes: list[str] = []
    epsilon: dict[str, float] = {}
    models = {protocol.GLOBAL_MODEL: global_arrays}
    if fine_tunes_locally(config):
        tell(Event.CROSS_SITE_FINE_TUNE, sites=len(nodes))
        local, epsilon, refused = _fine_tune(
            grid, nodes, config, run_log, global_arrays, message_config
        )
        tell(Event.CROSS_SITE_FINE_TUNED, done=len(local), sites=len(nodes))
        models.update(local)
        notes += [f"{refusal.site} did not fine-tune: {refusal.reason}" for refusal in refused]
        record_gap(grid, config, run_log, PHASE_FINE_TUNE, epsilon, refused)
    else:
        notes.append(
            "No local models: site DP is off, so they could only leave a site unprotected."
        )
    spent = tuple(sorted(epsilon)) if config.privacy.enabled else ()
    request = {**message_config, protocol.THRESHOLD: run_log.threshold}
    tell(Event.CROSS_SITE_EVALUATION, models=len(models), sites=len(nodes))
    try:
        results, refused = _evaluate_everywhere(grid, nodes, config, run_log, models, request)
    except Exception as error:  # the model is complete; the lost matrix is a gap
        log.exception("Cross-site evaluation failed; the run's model and metrics are complete")
        record_failure(grid, run_log, PHASE_CROSS_SITE_EVALUATION, error, spent)
        return None
    # A site that evaluated only some models leaves holes in the matrix: it is missing too.
    complete = [site for site, done in results.items() if len(done) == len(models)]
    tell(Event.CROSS_SITE_EVALUATED, done=len(complete), sites=len(nodes))
    notes += [f"{refusal.site} did not evaluate: {refusal.reason}" for refusal in refused]
    record_gap(grid, config, run_log, PHASE_CROSS_SITE_EVALUATION, complete, refused, spent)
    matrix = build_matrix(
        results, models=list(models), threshold=run_log.threshold, notes=notes, epsilon=epsilon
    )
    run_dir.write_json(MATRIX_FILE, matrix.to_json())
    log.info("Cross-site validation: %s models × %s sites", len(models), len(results))
    return matrix


def record_gap(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    phase: str,
    counted: Iterable[str],
    refusals: list[Refusal],
    spent: tuple[str, ...] = (),
) -> None:
    """A gap in ``run_log.gaps`` when ``phase`` did not count a site it needed; ``spent`` only
    when one is missing (then their fine-tune releases went into an incomplete matrix)."""
    needed, connected = needed_sites(grid, run_log)
    missing = missing_sites(
        needed, counted, refusals, timeout_s=config.round_timeout_s, connected=connected
    )
    if missing:
        gap = Gap(phase, missing, spent, needed=len(needed))
        log.warning("The run has a gap: %s", gap.sentence())
        run_log.gaps.append(gap)


def record_failure(
    grid: Grid, run_log: RunLog, phase: str, error: BaseException, spent: tuple[str, ...] = ()
) -> None:
    """``phase`` failed as a whole: every site it needed is missing."""
    needed, _ = needed_sites(grid, run_log)
    reason = f"the exchange failed ({type(error).__name__}; see the coordinator's log)"
    if not spent:
        reason += "; a site may have spent its release"
    run_log.gaps.append(Gap(phase, dict.fromkeys(needed, reason), spent, needed=len(needed)))


def _evaluate_everywhere(
    grid: Grid,
    nodes: list[int],
    config: RunConfig,
    run_log: RunLog,
    models: dict[str, ArrayRecord],
    request: dict[str, Any],
) -> tuple[dict[str, dict[str, SiteEvaluation]], list[Refusal]]:
    """Every model, in one message, at every site: (results[site][model] of the sites that
    evaluated every model, the refusals)."""
    phase = PHASE_CROSS_SITE_EVALUATION
    content = RecordDict({protocol.CONFIG: ConfigRecord(request), **models})
    message_type = f"{MessageType.EVALUATE}.{protocol.CROSS_SITE_ACTION}"
    messages = [
        Message(content=content, dst_node_id=node, message_type=message_type) for node in nodes
    ]
    replies = grid.send_and_receive(messages, timeout=config.round_timeout_s)
    accepted, refusals = triage(replies, run_log.names, phase)
    results = {}
    for reply in accepted:
        site = run_log.site_name(reply)
        records = reply.content.metric_records
        try:
            evaluated = {
                name: _evaluation(records[name], run_log.scheme)
                for name in models
                if name in records
            }
        except (KeyError, ValueError, TypeError) as error:
            reason = f"malformed cross-site reply ({type(error).__name__}); ignored"
            refusals.append(Refusal(site, phase, reason))
            continue
        results[site] = evaluated
        if len(evaluated) < len(models):
            refusals.append(Refusal(site, phase, f"{len(evaluated)} of {len(models)} models"))
    return results, refusals


def _fine_tune(
    grid: Grid,
    nodes: list[int],
    config: RunConfig,
    run_log: RunLog,
    global_arrays: ArrayRecord,
    message_config: dict[str, Any],
) -> tuple[dict[str, ArrayRecord], dict[str, float], list[Refusal]]:
    """(each site's model after one DP round of local training from the final global model, each
    fine-tuned site's ε for the run once that release is counted, the refusals)."""
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
    local: dict[str, ArrayRecord] = {}
    epsilon: dict[str, float] = {}
    for reply in accepted:
        site = run_log.site_name(reply)
        tuned = reply.content.array_records[protocol.ARRAYS]
        local[protocol.local_model_name(site)] = filled(tuned, global_arrays)
        epsilon[site] = float(first_metrics(reply).get(protocol.EPSILON, float("nan")))
    return dict(sorted(local.items())), epsilon, refusals


def _evaluation(record: Any, scheme: LabelScheme | None) -> SiteEvaluation:
    """One model's evaluation at one site: its scalars and score histogram, or per-class
    evidence for a multiclass or multilabel run (raises KeyError/ValueError when malformed)."""
    metrics = dict(record)
    if scheme is not None:
        keys = (*protocol.CLASS_HISTOGRAM_KEYS, protocol.CONFUSION_MATRIX)
        lists = {key: metrics.pop(key) for key in keys if key in metrics}
        return SiteEvaluation(metrics, ClassEvidence.from_lists(scheme, lists))
    if metrics.get(protocol.METRICS_WITHHELD):  # the site's metric policy
        return SiteEvaluation(metrics, None)
    released = (*protocol.DP_HISTOGRAM_KEYS, *protocol.DP_SCALARS)
    if protocol.DP_HIST_POSITIVES in metrics:
        noisy = NoisyEvaluation.from_metrics({key: metrics.pop(key) for key in released})
        return SiteEvaluation(metrics, noisy)
    histogram = ScoreHistogram.from_lists(
        {key: metrics.pop(key) for key in protocol.HISTOGRAM_KEYS}
    )
    return SiteEvaluation(metrics, histogram)
