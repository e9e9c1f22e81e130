"""``fedscan run``: submit a run to the coordinator and follow it round by round.

``run.toml`` holds the run's settings under ``[run]`` — the same kebab-case
keys as ``[tool.flwr.app.config]`` — and ``coordinator-config``, the path of
the coordinator's own ``coordinator.toml`` (``fedscan run`` runs on the
coordinator host: it reads the run directory as rounds complete). Success is
read from the run directory's status, never from ``flwr``'s exit code.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError, FedscanError
from fedscan.common.files import read_toml, write_json
from fedscan.common.processes import FLOWER_BIN, flower_env
from fedscan.server.coordinator_config import CoordinatorConfig, load_coordinator_config
from fedscan.server.flower_app import write_app
from fedscan.server.resume import resumable_config
from fedscan.server.rundir import FLOWER_RUN_FILE, RunDirectory
from fedscan.server.superlink import DEPLOYMENT_CONNECTION, flwr

_FINISHED = "finished"
_FINAL_STATES = ("completed", "failed")


@dataclass(frozen=True)
class RunRequest:
    coordinator: CoordinatorConfig
    run: RunConfig


def load_run_request(path: Path) -> RunRequest:
    """Read ``run.toml``: ``[run]`` settings (validated by RunConfig) and the coordinator's config
    path."""
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
    return RunRequest(
        load_coordinator_config(path.parent / str(coordinator)), RunConfig.from_flat(settings)
    )


def submit(request: RunRequest, *, resume_id: str | None = None) -> tuple[RunDirectory, int]:
    """Hand the run to the SuperLink; its run directory and Flower's run id.

    With ``resume_id``, that run continues from its last checkpoint with the settings it was started
    with (``[run]`` in run.toml is not used then); it gets a new Flower run id.
    """
    if resume_id is None:
        run_dir = RunDirectory.create(request.coordinator.runs_dir)
        settings: dict[str, Any] = dict(request.run.to_flat())
    else:
        run_dir = RunDirectory(request.coordinator.runs_dir / resume_id, resume_id)
        settings = {**resumable_config(run_dir).to_flat(), protocol.RESUME: True}
        run_dir.write_status(
            "resuming"
        )  # not the dead run's last word: `follow` waits for the new one
    run_config = {
        **settings,
        protocol.RUNS_DIR: str(request.coordinator.runs_dir),
        protocol.RUN_ID: run_dir.run_id,
    }
    with tempfile.TemporaryDirectory(prefix="fedscan-run-") as tmp:
        app_dir = write_app(Path(tmp) / "app", run_config, name="fedscan-run")
        reply = flwr(
            request.coordinator, "run", str(app_dir), DEPLOYMENT_CONNECTION, timeout_s=120.0
        )
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


def follow(
    request: RunRequest,
    run_dir: RunDirectory,
    flower_run_id: int,
    on_round: Callable[[dict[str, Any]], None],
    *,
    poll_s: float = 1.0,
    check_every_s: float = 10.0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Feed each completed round to ``on_round`` until the run ends; its final status."""
    shown, last_check = 0, time.monotonic()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        history = run_dir.read_metrics()
        for record in history[shown:]:
            on_round(record)
        shown = len(history)
        status = run_dir.read_status()
        if status.get("state") in _FINAL_STATES:
            return status
        if time.monotonic() - last_check > check_every_s:
            last_check = time.monotonic()
            flower_status = flower_run_status(request.coordinator, flower_run_id)
            if flower_status.startswith(_FINISHED):
                time.sleep(poll_s)  # the ServerApp writes status.json just before it exits
                status = run_dir.read_status()
                return (
                    status
                    if status.get("state") in _FINAL_STATES
                    else {
                        "state": "failed",
                        "reason": f"Flower reports {flower_status} before the run wrote its "
                        "status. End of the ServerApp's log:\n"
                        + server_log_tail(request.coordinator, flower_run_id),
                    }
                )
        if deadline is not None and time.monotonic() > deadline:
            return {
                "state": "failed",
                "reason": f"no result within {timeout_s:g} s; the run may still be going: "
                "`fedscan status`.",
            }
        time.sleep(poll_s)


def flower_run_status(coordinator: CoordinatorConfig, flower_run_id: int) -> str:
    """Flower's status of one run, e.g. ``running`` or ``finished:completed``."""
    runs = flwr(coordinator, "ls", DEPLOYMENT_CONNECTION, "--run-id", str(flower_run_id)).get(
        "runs", []
    )
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def server_log(coordinator: CoordinatorConfig, flower_run_id: int) -> str:
    """The ServerApp's log of one run, as Flower keeps it (``flwr log RUN --show``)."""
    command = [str(FLOWER_BIN / "flwr"), "log", str(flower_run_id), DEPLOYMENT_CONNECTION, "--show"]
    try:
        result = subprocess.run(
            command,
            # Flower prints through rich, which wraps at 80 columns off a terminal: one log
            # record per line keeps the log greppable.
            env={**flower_env(coordinator.flwr_home), "COLUMNS": "10000"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=coordinator.state_dir,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "(flwr log did not answer)"
    if result.returncode != 0:
        raise FedscanError(
            f"`flwr log` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-300:]} (is `fedscan server start` "
            "running?)"
        )
    return result.stdout.strip() or "(empty)"


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
        rows.append(
            {
                "run_id": path.name,
                "state": status.get("state", "unknown"),
                "rounds": len([line for line in history if "aggregated" in line]),
                "reason": status.get("reason", ""),
            }
        )
    return rows
