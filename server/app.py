"""The coordinator's ServerApp: R rounds at every site, then cross-site validation.

Every round's global model is evaluated at every site (with the next round's
training, see :mod:`fedscan.server.rounds`), saved to the run directory, and
one line is appended to metrics.jsonl. The coordinator sends
configuration only (the flat dict of :meth:`RunConfig.to_message`), never code.
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
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.settings import parse_bool
from fedscan.server.gate import UpdateGate
from fedscan.server.polling_grid import PollingGrid
from fedscan.server.resume import restore_run, resumable_config, save_round
from fedscan.server.rounds import run_rounds
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import FINAL_MODEL, RunDirectory
from fedscan.server.strategy import build_strategy
from fedscan.server.tensorboard import require_tensorboard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationResult:
    run_dir: RunDirectory
    history: list[dict[str, Any]]
    final_model: Path


def wait_for_sites(grid: Grid, min_sites: int, timeout_s: float) -> int:
    """Wait (bounded, unlike Flower's sampler) until ``min_sites`` sites are connected."""
    deadline = time.monotonic() + timeout_s
    while (connected := len(list(grid.get_node_ids()))) < min_sites:
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
    run_dir.write_status("running", resumed=resume)
    try:
        result = _federate(grid, config, run_dir, resume=resume)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, FedscanError) else f"{type(exc).__name__}: {exc}"
        run_dir.write_status("failed", reason=reason)
        raise
    run_dir.write_status("completed", rounds=config.rounds)
    _write_report(run_dir)
    return result


def _write_report(run_dir: RunDirectory) -> None:
    """report.html and model_card.md; a report that fails must not fail a completed run."""
    from fedscan.server.report import build_report

    try:
        build_report(run_dir.path)
    except Exception:  # logged with its traceback; `fedscan report` can retry
        log.exception(
            "Could not write the run report; rebuild it with `fedscan report %s`", run_dir.path
        )


def _federate(
    grid: Grid, config: RunConfig, run_dir: RunDirectory, *, resume: bool
) -> FederationResult:
    random.seed(config.seed)  # Flower's node sampling uses the global `random`
    run_dir.write_config(config.to_json())
    run_dir.write_run_config(config.to_flat())
    if config.tensorboard:
        require_tensorboard()
    num_sites = wait_for_sites(grid, config.min_sites, config.join_timeout_s)
    run_log = RunLog(
        run_dir,
        config.train.model,
        config.min_sites,
        tensorboard=config.tensorboard,
        gate=UpdateGate(norm_factor=config.norm_gate),
        model_options=config.train.classical,
    )
    strategy = build_strategy(config, run_log, num_sites)
    message_config = {
        **config.to_message(),
        protocol.RUN_ID: run_dir.run_id,
    }  # keys each site's ledger
    last_round, arrays = (restore_run(run_dir, run_log, strategy) if resume else None) or (
        0,
        _initial_arrays(grid, config, run_log, message_config),
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
        before_round=lambda _: wait_for_sites(grid, config.min_sites, config.join_timeout_s),
        after_round=lambda done, new: save_round(run_dir, config, run_log, strategy, done, new),
    )
    final = _save_final(run_dir, config, run_log, arrays)
    if config.cross_site:
        _cross_validate(grid, config, run_log, arrays, message_config, run_dir)
    return FederationResult(run_dir, run_log.history, final)


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
    )


def _initial_arrays(
    grid: Grid, config: RunConfig, run_log: RunLog, message_config: dict[str, Any]
) -> ArrayRecord:
    """The round-1 global model, the same for the same seed; the classical models' feature
    standardisation comes from the sites."""
    model = build_model(config.train.model, seed=config.seed, options=config.train.classical)
    arrays = ArrayRecord(model.state_dict())
    if not get_model_spec(config.train.model).classical:
        return arrays
    from fedscan.server.feature_stats import standardise

    return standardise(grid, config, run_log, arrays, message_config)


def _cross_validate(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    arrays: ArrayRecord,
    message_config: dict[str, Any],
    run_dir: RunDirectory,
) -> None:
    """The models × sites matrix; the run's rounds are done, so a failure here is logged, not
    raised."""
    from fedscan.server.crosssite import cross_site_validation

    try:
        cross_site_validation(grid, config, run_log, arrays, message_config, run_dir)
    except Exception:  # the trained model is saved; only the matrix is missing
        log.exception("Cross-site validation failed; the run's model and metrics are complete")


def _log_to_stderr() -> None:
    """This process's output is the run's log (`fedscan logs`, coordinator.log): fedscan's INFO
    goes there."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("fedscan")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point on a SuperLink (simulation or deployment): settings from the run config."""
    _log_to_stderr()
    run_config = dict(context.run_config)
    run_dir = RunDirectory.create(
        Path(str(run_config.get(protocol.RUNS_DIR, "runs"))),
        str(run_config.get(protocol.RUN_ID, "")) or None,
        exist_ok=True,
    )
    resume = parse_bool(run_config.get(protocol.RESUME, False), what=protocol.RESUME)
    # A resumed run continues with the settings it was started with, whatever the request carried.
    config = resumable_config(run_dir) if resume else RunConfig.from_flat(run_config)
    run_federation(PollingGrid(grid), config, run_dir, resume=resume)
