"""``fedscan run``: submit a run to the coordinator and follow it round by round.

``run.toml`` holds the run's settings under ``[run]`` — the same kebab-case
keys as ``[tool.flwr.app.config]`` — and ``coordinator-config``, the path of
the coordinator's own ``coordinator.toml`` (``fedscan run`` runs on the
coordinator host: it reads the run directory as rounds complete). Success is
read from the run directory's status, never from ``flwr``'s exit code.
Following a run is :mod:`fedscan.server.follow`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError, FedscanError
from fedscan.common.files import read_toml, write_json
from fedscan.server.coordinator_config import CoordinatorConfig, load_coordinator_config
from fedscan.server.coverage import gaps_from_status
from fedscan.server.flower_app import write_app
from fedscan.server.rundir import (
    FLOWER_RUN_FILE,
    PHASE_APPROVAL,
    PHASE_ROUND,
    PHASE_WAITING,
    STATE_RESUMING,
    STATE_RUNNING,
    STATE_STARTING,
    STATUS_FILE,
    Event,
    RunDirectory,
)
from fedscan.server.superlink import DEPLOYMENT_CONNECTION, flwr


@dataclass(frozen=True)
class RunRequest:
    coordinator: CoordinatorConfig
    run: RunConfig


def load_run_request(path: Path, *, init_weights: Path | None = None) -> RunRequest:
    """Read ``run.toml``: ``[run]`` settings (validated by RunConfig; relative paths from the
    file's folder) and the coordinator's config path. ``init_weights`` (``--init``) replaces the
    file's starting weights."""
    path = Path(path).expanduser()
    document = read_toml(path, "run")
    if set(document) != {"run"}:
        raise ConfigError(f"{path} must hold exactly one section, [run].")
    settings = dict(document["run"])
    coordinator = settings.pop("coordinator-config", None)
    if not coordinator:
        raise ConfigError(
            f"{path}: [run] coordinator-config is required (the path of coordinator.toml)."
        )
    run = RunConfig.from_flat(settings, base=path.parent)
    if init_weights is not None:
        where = str(Path(init_weights).expanduser().resolve())
        run = replace(run, init_weights=where, init_weights_sha256="")
    return RunRequest(load_coordinator_config(path.parent / str(coordinator)), run)


def submit(request: RunRequest, *, resume_id: str | None = None) -> tuple[RunDirectory, int]:
    """Hand the run to the SuperLink; its run directory and Flower's run id.

    With ``resume_id``, that run continues from its last checkpoint with the settings it was started
    with (``[run]`` in run.toml is not used then); it gets a new Flower run id.
    """
    if resume_id is None:
        run_dir = RunDirectory.create(request.coordinator.runs_dir)
        settings: dict[str, Any] = dict(request.run.to_flat())
        before: dict[str, Any] = {}
    else:
        run_dir = RunDirectory(request.coordinator.runs_dir / resume_id, resume_id)
        from fedscan.server.resume import resumable_config  # imports torch: only for a resume

        settings = {**resumable_config(run_dir).to_flat(), protocol.RESUME: True}
        before = run_dir.read_status()
        # Not the dead run's last word: `follow` waits for the new one.
        run_dir.write_status(STATE_RESUMING)
    run_config = {
        **settings,
        protocol.RUNS_DIR: str(request.coordinator.runs_dir),
        protocol.RUN_ID: run_dir.run_id,
    }
    if resume_id is None:  # `fedscan status` shows it before the ServerApp starts
        run_dir.write_status(STATE_STARTING)
    # Where this submission's events begin (a resumed run's file holds the earlier attempts').
    run_dir.append_event(Event.SUBMITTED, resumed=resume_id is not None)
    try:
        with tempfile.TemporaryDirectory(prefix="fedscan-run-") as tmp:
            app_dir = write_app(Path(tmp) / "app", run_config, name="fedscan-run")
            reply = flwr(
                request.coordinator, "run", str(app_dir), DEPLOYMENT_CONNECTION, timeout_s=120.0
            )
    except FedscanError:
        if before:  # a resume that was not submitted: the dead run's last word stands
            run_dir.write_json(STATUS_FILE, before)
        raise
    record = run_dir.file(FLOWER_RUN_FILE)
    flower_run_id = int(reply[protocol.FLOWER_CLI_RUN_ID])
    write_json(
        record, {"flower_run_id": flower_run_id, "earlier": flower_run_ids(record)}, indent=None
    )
    return run_dir, flower_run_id


def flower_run_ids(record: Path) -> list[int]:
    """Every Flower run id a fedscan run was submitted under, oldest first (one more per resume)."""
    if not record.is_file():
        return []
    stored = json.loads(record.read_text())
    return [*stored.get("earlier", []), int(stored["flower_run_id"])]


def flower_run_status(coordinator: CoordinatorConfig, flower_run_id: int) -> str:
    """Flower's status of one run, e.g. ``running`` or ``finished:completed``."""
    from fedscan.server.control_api import ControlApi  # in-process: no `flwr ls` subprocess

    with ControlApi(coordinator) as api:
        return api.run_status(flower_run_id)


def server_log(coordinator: CoordinatorConfig, flower_run_id: int) -> str:
    """The ServerApp's log of one run so far, each record once as Flower stores it."""
    from fedscan.server.control_api import ControlApi  # in-process: no `flwr log` subprocess

    with ControlApi(coordinator) as api:
        return api.run_log(flower_run_id) or "(empty)"


def server_log_tail(coordinator: CoordinatorConfig, flower_run_id: int, lines: int = 15) -> str:
    """The last lines of the ServerApp's log (for runs that died before writing their status)."""
    return "\n".join(server_log(coordinator, flower_run_id).splitlines()[-lines:])


def flower_run_ids_of(coordinator: CoordinatorConfig, run_id: str) -> list[int]:
    """Flower's ids of the fedscan run ``run_id`` (recorded by ``fedscan run``; a resume adds
    one)."""
    ids = flower_run_ids(coordinator.runs_dir / run_id / FLOWER_RUN_FILE)
    if not ids:
        raise ConfigError(
            f"No run {run_id!r} launched by `fedscan run` on this coordinator; `fedscan status` "
            "lists them."
        )
    return ids


def run_statuses(coordinator: CoordinatorConfig) -> list[dict[str, Any]]:
    """Every run directory on this coordinator with its state and rounds completed, newest first."""
    rows = []
    for path in sorted(coordinator.runs_dir.glob("*/"), reverse=True):
        run_dir = RunDirectory(path, path.name)
        status, history = run_dir.read_status(), run_dir.read_metrics()
        gaps = gaps_from_status(status)
        rows.append(
            {
                "run_id": path.name,
                "state": describe_state(status),
                "rounds": len([line for line in history if "aggregated" in line]),
                "reason": status.get("reason", "") or "; ".join(gap.sentence() for gap in gaps),
            }
        )
    return rows


def describe_state(status: dict[str, Any]) -> str:
    """A run's state as ``fedscan status`` shows it: ``starting``, ``waiting-for-sites (k of n)``,
    ``round r of R``, ``cross-site-validation``, or the final state."""
    state = str(status.get("state", "unknown"))
    phase = status.get("phase")
    if state != STATE_RUNNING or phase is None:
        return state
    if phase == PHASE_WAITING:
        return f"{phase} ({status.get('connected')} of {status.get('needed')})"
    if phase == PHASE_ROUND:
        return f"round {status.get('round')} of {status.get('rounds')}"
    if phase == PHASE_APPROVAL:
        return f"round {status.get('round')}: waiting for approval at {status.get('sites')}"
    return str(phase)
