"""Resuming a run whose coordinator died: what is saved after every round, and how it is put back.

A resumed run continues from the last checkpointed round with the run's own
settings (``run-config.json``), the same run id — so each site's ledger
recognises rounds it already released and re-sends the stored update
without spending budget again — and a metrics history cut back to that
checkpoint, so a redone round is logged once.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord

from fedscan.common.config import RunConfig
from fedscan.common.errors import ResumeError
from fedscan.server.round_checkpoint import (
    RoundCheckpoint,
    load_latest,
    restore_rng,
    rng_state,
    write_checkpoint,
)
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import FINISHED_STATES, RunDirectory

log = logging.getLogger(__name__)


def save_round(
    run_dir: RunDirectory,
    config: RunConfig,
    run_log: RunLog,
    strategy: Any,
    server_round: int,
    arrays: ArrayRecord,
) -> None:
    """Checkpoint the coordinator after ``server_round``'s aggregation."""
    scalars, tensors = strategy.checkpoint_state()
    state = {
        "config": config.to_flat(),
        "recorder": run_log.snapshot(),
        "strategy": scalars,
        "rng": rng_state(),
    }
    write_checkpoint(
        run_dir.path, RoundCheckpoint(server_round, arrays.to_torch_state_dict(), state, tensors)
    )


def restore_run(
    run_dir: RunDirectory, run_log: RunLog, strategy: Any
) -> tuple[int, ArrayRecord] | None:
    """(last completed round, its global model) from the newest valid checkpoint, with the run log,
    strategy and RNG states put back; None when no round was checkpointed (the run starts over)."""
    checkpoint = load_latest(run_dir.path)
    if checkpoint is None:
        log.warning("Run %s has no usable checkpoint; resuming from round 1", run_dir.run_id)
        return None
    run_log.restore(checkpoint.state["recorder"])
    strategy.restore_state(checkpoint.state["strategy"], checkpoint.strategy_tensors)
    restore_rng(checkpoint.state["rng"])
    log.info("Resuming run %s after round %s", run_dir.run_id, checkpoint.round)
    return checkpoint.round, ArrayRecord(checkpoint.arrays)


def resumable_config(run_dir: RunDirectory) -> RunConfig:
    """The settings the run was started with; refuses a finished run (completed, with gaps or
    not: its rounds are done and its sites' releases spent) or a folder that is not a run."""
    state = run_dir.read_status().get("state")
    if state in FINISHED_STATES:
        raise ResumeError(
            f"Run {run_dir.run_id} already completed ({state}); there is nothing to resume. "
            "Start a new run for what it missed."
        )
    flat = run_dir.read_run_config()
    if flat is None:
        raise ResumeError(
            f"Run {run_dir.run_id} has no run-config.json, so it never started on this "
            "coordinator; check the run id with `fedscan status`."
        )
    return RunConfig.from_flat(flat)
