"""The coordinator's ServerApp: R rounds at every site, then cross-site validation.

Every round's global model is evaluated at every site (with the next round's
training, see :mod:`fedscan.server.rounds`), saved to the run directory, and
one line is appended to metrics.jsonl. Round 1's global model is the seed's, or an earlier model
warm-started from ``init-weights`` (:mod:`fedscan.server.initial_model`). The coordinator sends
configuration only (the flat dict of :meth:`RunConfig.to_message`), never code.
status.json says what the run is doing as it goes and how it ended: ``completed`` only when
every phase reached every site it needed, ``completed-with-gaps`` (each gap named) when a phase
missed sites but the final model is complete, ``failed`` otherwise; events.jsonl tells each step.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.errors import ErrorCode, FedscanError, QuorumError
from fedscan.common.logs import log_to_stderr
from fedscan.common.models.trainable import update_names
from fedscan.common.models.warm_start import pinned
from fedscan.common.tasks import MULTICLASS, MULTILABEL, LabelScheme, structures
from fedscan.common.values import parse_bool
from fedscan.server.audit import AuditedGrid, RunAudit
from fedscan.server.coverage import PHASE_CROSS_SITE_VALIDATION, Gap, training_gaps
from fedscan.server.gate import UpdateGate
from fedscan.server.initial_model import initial_arrays
from fedscan.server.object_pulls import PullBudget, bound_object_pulls
from fedscan.server.polling_grid import PollingGrid
from fedscan.server.resume import restore_run, resumable_config, save_round
from fedscan.server.rounds import run_rounds
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import (
    FINAL_MODEL,
    PHASE_CROSS_SITE,
    PHASE_WAITING,
    STATE_COMPLETED,
    STATE_COMPLETED_WITH_GAPS,
    STATE_FAILED,
    STATE_RUNNING,
    Event,
    RunDirectory,
    RunProgress,
)
from fedscan.server.strategy import build_strategy
from fedscan.server.tensorboard import require_tensorboard
from fedscan.server.triage import SiteNames
from fedscan.server.update_check import UpdateCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationResult:
    run_dir: RunDirectory
    history: list[dict[str, Any]]
    final_model: Path
    gaps: tuple[Gap, ...] = ()  # phases that missed sites: the run completed with gaps


def wait_for_sites(
    grid: Grid, min_sites: int, timeout_s: float, progress: RunProgress | None = None
) -> int:
    """Wait (bounded, unlike Flower's sampler) until ``min_sites`` sites are connected;
    ``progress`` hears of each change in the count while waiting."""
    deadline, told = time.monotonic() + timeout_s, -1
    while (connected := len(list(grid.get_node_ids()))) < min_sites:
        if progress is not None and connected != told:
            progress(
                Event.WAITING_FOR_SITES, phase=PHASE_WAITING, connected=connected, needed=min_sites
            )
            told = connected
        if time.monotonic() > deadline:
            raise QuorumError(
                f"Only {connected} of the {min_sites} required sites connected "
                f"within {timeout_s:g} s; start more sites or lower min-sites."
            )
        time.sleep(1.0)
    return connected


def run_federation(
    grid: Grid, config: RunConfig, run_dir: RunDirectory, *, resume: bool = False
) -> FederationResult:
    """Run the whole federation on ``grid``; ``run_dir/status.json`` tells how it ended.

    With ``resume``, continue ``run_dir``'s run from its newest valid checkpoint.
    """
    run_dir.write_status(STATE_RUNNING, resumed=resume)
    progress = RunProgress(run_dir, resume)
    grid = AuditedGrid(grid, RunAudit(run_dir.path))  # what was sent and received, chained
    try:
        result = _federate(grid, config, run_dir, progress, resume=resume)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, FedscanError) else f"{type(exc).__name__}: {exc}"
        run_dir.write_status(STATE_FAILED, reason=reason)
        progress(Event.FAILED)
        raise
    if result.gaps:
        gaps = [gap.to_json() for gap in result.gaps]
        run_dir.write_status(STATE_COMPLETED_WITH_GAPS, rounds=config.rounds, gaps=gaps)
    else:
        run_dir.write_status(STATE_COMPLETED, rounds=config.rounds)
    _write_report(run_dir, progress)
    return result


def _write_report(run_dir: RunDirectory, progress: RunProgress) -> None:
    """report.html and model_card.md; a report that fails must not fail a completed run."""
    from fedscan.server.report import build_report

    try:
        build_report(run_dir.path)
    except Exception:  # logged with its traceback; `fedscan report` can retry
        log.exception(
            "Could not write the run report; rebuild it with `fedscan report %s`", run_dir.path
        )
        progress(Event.REPORT_FAILED)
        return
    progress(Event.REPORT_WRITTEN)


def _federate(
    grid: Grid, config: RunConfig, run_dir: RunDirectory, progress: RunProgress, *, resume: bool
) -> FederationResult:
    random.seed(config.seed)  # Flower's node sampling uses the global `random`
    config = pinned(config)  # the starting weights' SHA-256, in the records and every message
    run_dir.write_config(config.to_json())
    run_dir.write_run_config(config.to_flat())
    if config.tensorboard:
        require_tensorboard()
    num_sites = wait_for_sites(grid, config.min_sites, config.join_timeout_s, progress)
    run_log = _run_log(run_dir, config)
    strategy = build_strategy(config, run_log, num_sites)
    message_config = {
        **config.to_message(),
        protocol.RUN_ID: run_dir.run_id,
    }  # keys each site's ledger
    last_round, arrays = (restore_run(run_dir, run_log, strategy) if resume else None) or (
        0,
        initial_arrays(grid, config, run_log, message_config, progress),
    )
    log.info(
        "Starting %s rounds of %s with %s sites",
        config.rounds - last_round,
        config.strategy,
        num_sites,
    )
    arrays = run_rounds(
        strategy,
        grid,
        run_log,
        initial_arrays=arrays,
        rounds=config.rounds,
        first_round=last_round + 1,
        timeout=config.round_timeout_s,
        message_config=message_config,
        before_round=lambda _: wait_for_sites(
            grid, config.min_sites, config.join_timeout_s, progress
        ),
        after_round=lambda done, new: save_round(run_dir, config, run_log, strategy, done, new),
        progress=progress,
        approval_wait_s=config.join_timeout_s,
        secure_bound=config.secure_update_bound if config.secure_aggregation else None,
    )
    final = _save_final(run_dir, config, run_log, arrays)
    if config.cross_site:
        progress(Event.CROSS_SITE_VALIDATION, phase=PHASE_CROSS_SITE)
        _cross_validate(grid, config, run_log, arrays, message_config, run_dir, progress)
    gaps = (*training_gaps(run_log.history, config.rounds, config.min_sites), *run_log.gaps)
    return FederationResult(run_dir, run_log.history, final, gaps)


def _run_log(run_dir: RunDirectory, config: RunConfig) -> RunLog:
    from fedscan.server.site_registry import names_by_node  # STATE/sites.json, beside STATE/runs

    return RunLog(
        run_dir,
        config.train.model,
        config.min_sites,
        tensorboard=config.tensorboard,
        check=UpdateCheck(
            UpdateGate(norm_factor=config.norm_gate),
            trained_names=update_names(config.train) or (),
        ),
        model_options=config.train.classical,
        scheme=_class_scheme(config),
        operating_point=config.operating_point,
        # A site that refuses before it ever replied is still named as the operator registered it.
        names=SiteNames(names_by_node(run_dir.path.parent.parent)),
    )


def _class_scheme(config: RunConfig) -> LabelScheme | None:
    """The run's classes when it pools per class (multiclass, multilabel) or per structure (a
    label map)."""
    train = config.train
    if train.task not in (MULTICLASS, MULTILABEL) and not structures(train.task, train.classes):
        return None
    return LabelScheme(train.task, train.classes)


def _save_final(
    run_dir: RunDirectory, config: RunConfig, run_log: RunLog, arrays: ArrayRecord
) -> Path:
    """final.pt with the operating threshold chosen on the pooled validation histogram (which
    ``fedscan evaluate`` reuses); a run whose last round no site completed has no final model."""
    if not run_log.history or "train" not in run_log.history[-1]:
        raise FedscanError(
            "No site completed the last round; see the refusals in metrics.jsonl.",
            code=ErrorCode.RUN_FAILED,
        )
    return run_dir.save_model(
        FINAL_MODEL,
        config.train.model,
        arrays.to_torch_state_dict(),
        classical=config.train.classical,
        rounds=config.rounds,
        strategy=config.strategy,
        threshold=run_log.threshold,
        **({"calibration": run_log.calibration} if run_log.calibration else {}),
        **run_log.class_meta,
    )


def _cross_validate(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    arrays: ArrayRecord,
    message_config: dict[str, Any],
    run_dir: RunDirectory,
    progress: RunProgress,
) -> None:
    """The models × sites matrix; the run's rounds are done, so a failure here is a gap of the
    run, not its failure."""
    from fedscan.server.crosssite import cross_site_validation, record_failure

    try:
        cross_site_validation(grid, config, run_log, arrays, message_config, run_dir, progress)
    except Exception as error:  # the trained model is saved; only the matrix is missing
        log.exception("Cross-site validation failed; the run's model and metrics are complete")
        record_failure(grid, run_log, PHASE_CROSS_SITE_VALIDATION, error)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point on a SuperLink (simulation or deployment): settings from the run config."""
    # This process's output is the run's log (`fedscan logs`); claiming the root logger first
    # keeps Opacus' import-time basicConfig from printing every line twice.
    log_to_stderr()
    run_config = dict(context.run_config)
    run_dir = RunDirectory.create(
        Path(str(run_config.get(protocol.RUNS_DIR, "runs"))),
        str(run_config.get(protocol.RUN_ID, "")) or None,
        exist_ok=True,
    )
    resume = parse_bool(run_config.get(protocol.RESUME, False), what=protocol.RESUME)
    # A resumed run continues with the settings it was started with, whatever the request carried.
    config = resumable_config(run_dir) if resume else RunConfig.from_flat(run_config)
    pulls = PullBudget()
    if not bound_object_pulls(pulls):
        log.warning(
            "This Flower's Grid does not pull reply objects where fedscan expects: a site that "
            "dies mid-upload can hold its round past round-timeout-s."
        )
    run_federation(PollingGrid(grid, pulls=pulls), config, run_dir, resume=resume)
