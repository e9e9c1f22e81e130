"""``fedscan simulate``: the whole federation on one machine, on Flower's Simulation Engine.

The run is submitted with ``flwr run`` to a private SuperLink in simulation
mode (see :mod:`fedscan.cli.simulation_engine`): the ServerApp and every site's
ClientApp are the installed fedscan, configured by a generated run config —
the same path a deployment takes. Progress is read from the run directory.
Nothing is installed at run time and no Flower or Ray process outlives the
command: it is a child subreaper, and SIGTERM, SIGHUP and SIGINT (``timeout``,
systemd, a CI cancel, Ctrl-C) all end it as Ctrl-C does, through the
``finally`` clauses that stop the engine's whole tree (measured under 2 s;
bounded by :data:`~fedscan.common.processes.STOP_BOUND_S`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from fedscan.cli.simulation_engine import SimulationSuperLink, check_ray_cluster
from fedscan.cli.simulation_sites import Simulation, plan_sources
from fedscan.common import protocol
from fedscan.common.config import FlatValue, RunConfig
from fedscan.common.data.sources import FolderSource, NpzShardSource, sources_to_json
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError, RunFailed
from fedscan.common.files import write_json
from fedscan.common.processes import stop_process_group
from fedscan.common.signals import StopSignals
from fedscan.server.flower_app import toml_value, write_app
from fedscan.server.rundir import (
    COORDINATOR_LOG,
    FINAL_MODEL,
    FINISHED_STATES,
    MATRIX_FILE,
    SIMULATION_FILE,
    RunDirectory,
)

log = logging.getLogger(__name__)
Observer = Callable[[dict[str, Any]], None]


def federation_config(simulation: Simulation, verbose: bool) -> str:
    """Simulation Engine resources: ``site_cpus`` per site worker (default 1) and, on a GPU, a
    share of it (default: one GPU shared by the sites). A private Ray instance gets this machine's
    CPUs; an existing cluster (``ray_address``) has its own, which Ray refuses to be told."""
    on_gpu = resolve_device(simulation.device).type == "cuda"
    cpus = os.cpu_count() or 1
    shared = (1.0 / min(simulation.sites, cpus)) if on_gpu else 0.0
    values: dict[str, FlatValue] = {
        "num-supernodes": simulation.sites,
        "client-resources-num-cpus": simulation.site_cpus,
        "client-resources-num-gpus": shared
        if simulation.site_gpus is None
        else simulation.site_gpus,
        "init-args-logging-level": "INFO" if verbose else "ERROR",
        "init-args-log-to-driver": verbose,
    }
    if not simulation.ray_address:
        values |= {"init-args-num-cpus": cpus, "init-args-num-gpus": 1 if on_gpu else 0}
    return " ".join(f"{key}={toml_value(value)}" for key, value in values.items())


def run_simulation(
    config: RunConfig,
    simulation: Simulation,
    *,
    out: Path,
    console: Console,
    cache_dir: str = "",
    verbose: bool = False,
    resume_id: str | None = None,
) -> dict[str, Any]:
    """Run one simulated federation (or continue run ``resume_id`` in ``out``); a summary for
    display."""
    from fedscan.cli.display import RoundTable

    if config.train.task == "segmentation" and simulation.choice.kind == "npz":
        raise ConfigError(
            "An npz file holds no masks: segmentation runs on site folders whose labels CSV names "
            "a mask per image (--data synthetic or dicom:DIR,...)."
        )
    _check_dimensions(config, simulation)
    if simulation.ray_address:
        check_ray_cluster(simulation.ray_address)
    with StopSignals(interrupt=True), tempfile.TemporaryDirectory(prefix="fedscan-sim-") as tmp:
        workdir = Path(tmp)
        # Synthetic sites and npz partitions follow the run's seed: a resumed run sees the same
        # data.
        sources = plan_sources(
            simulation,
            seed=config.seed,
            workdir=workdir,
            cache_dir=cache_dir,
            task=config.train.task,
            classes=config.train.classes,
        )
        run_dir = _run_directory(out, simulation, resume_id)
        run_config = _run_config(
            config, simulation, run_dir, sources, resumed=resume_id is not None
        )
        app_dir = write_app(workdir / "app", run_config)
        _announce(console, config, simulation.sites, run_dir)
        started = time.monotonic()
        segmentation = config.train.task == "segmentation"
        with RoundTable(console, [s.name for s in sources], segmentation=segmentation) as table:
            federation = federation_config(simulation, verbose)
            _run_engine(workdir, app_dir, run_dir, federation, table.update, simulation.ray_address)
        wall = time.monotonic() - started
    return _summary(config, run_dir, wall)


def _check_dimensions(config: RunConfig, simulation: Simulation) -> None:
    """A 3-D model needs series (synthetic-ct or DICOM folders); synthetic-ct needs a 3-D model."""
    from fedscan.common.models.registry import get_model_spec

    volumetric = get_model_spec(config.train.model).volumetric
    kind = simulation.choice.kind
    if volumetric and kind in ("synthetic", "npz"):
        raise ConfigError(
            f"Model {config.train.model} trains on volumes (DICOM series); use --data "
            "synthetic-ct or dicom:DIR,... with CT or MR series."
        )
    if kind == "synthetic-ct" and not volumetric:
        raise ConfigError(
            f"--data synthetic-ct holds CT series; model {config.train.model} reads 2-D "
            "images. Use cnn3d, densenet3d or unet3d (the default for the task when none is set)."
        )


def _run_directory(out: Path, simulation: Simulation, resume_id: str | None) -> RunDirectory:
    """A new run directory recording how its sites are simulated, or the run being resumed."""
    if resume_id is not None:
        return RunDirectory(out.resolve() / resume_id, resume_id)
    run_dir = RunDirectory.create(out.resolve())
    write_json(run_dir.file(SIMULATION_FILE), simulation.to_json())
    return run_dir


def _run_config(
    config: RunConfig,
    simulation: Simulation,
    run_dir: RunDirectory,
    sources: Sequence[FolderSource | NpzShardSource],
    *,
    resumed: bool,
) -> dict[str, FlatValue]:
    """The run's settings plus what the apps need to find the run directory and the sites."""
    return {
        **config.to_flat(),
        protocol.RUNS_DIR: str(run_dir.path.parent),
        protocol.RUN_ID: run_dir.run_id,
        protocol.DEVICE: simulation.device,
        protocol.SIMULATION_SITES: sources_to_json(sources),
        protocol.SIMULATION_STATE_DIR: str(run_dir.sites_state_dir),
        protocol.SIMULATION_METRICS: simulation.site_metrics,
        protocol.RESUME: resumed,
    }


def _summary(config: RunConfig, run_dir: RunDirectory, wall: float) -> dict[str, Any]:
    """What the command prints at the end; RunFailed unless the run completed (with gaps or not:
    ``state`` and ``gaps`` tell which)."""
    status = run_dir.read_status()
    if status.get("state") not in FINISHED_STATES:
        stopped = f"the engine stopped early; see {run_dir.file(COORDINATOR_LOG)}"
        raise RunFailed(f"The federation failed: {status.get('reason') or stopped}")
    history = run_dir.read_metrics()
    return {
        "state": status["state"],
        "gaps": status.get("gaps", []),
        "run_id": run_dir.run_id,
        "run_dir": str(run_dir.path),
        "wall_s": round(wall, 1),
        "matrix": run_dir.read_json(MATRIX_FILE) or None,
        "final": history[-1] if history else {},
        "final_model": str(run_dir.model_file(FINAL_MODEL)),
        "epsilon_target": config.privacy.epsilon if config.privacy.enabled else math.inf,
        "central_delta": config.central_delta,
    }


def resume_simulation(
    out: Path, run_id: str, *, console: Console, cache_dir: str = "", verbose: bool = False
) -> dict[str, Any]:
    """Continue simulated run ``run_id`` in ``out`` after its coordinator stopped (killed or
    crashed)."""
    from fedscan.server.resume import resumable_config

    run_dir = RunDirectory(out.resolve() / run_id, run_id)
    described = run_dir.read_json(SIMULATION_FILE)
    if not described:
        raise ConfigError(
            f"{run_dir.path} is not a simulated run (no {SIMULATION_FILE}); "
            "check --out and the run id."
        )
    config = resumable_config(run_dir)
    console.print(f"Resuming run {run_id} from its last checkpoint", highlight=False)
    return run_simulation(
        config,
        Simulation.from_json(described),
        out=out,
        console=console,
        cache_dir=cache_dir,
        verbose=verbose,
        resume_id=run_id,
    )


def _announce(console: Console, config: RunConfig, sites: int, run_dir: RunDirectory) -> None:
    privacy = config.privacy
    dp = f"ε={privacy.epsilon:g}, δ={privacy.delta:g}" if privacy.enabled else "OFF"
    rounds = f"{config.rounds} round{'s' if config.rounds != 1 else ''}"
    console.print(
        f"Run {run_dir.run_id}: {sites} sites, {rounds}, model {config.train.model}, "
        f"DP {dp} → {run_dir.path}",
        highlight=False,
        soft_wrap=True,
    )


def _run_engine(
    workdir: Path,
    app_dir: Path,
    run_dir: RunDirectory,
    federation: str,
    observer: Observer,
    ray_address: str = "",
) -> None:
    """Submit the run to a private SuperLink and feed each new round to ``observer``."""
    engine_log = run_dir.file(COORDINATOR_LOG)
    with (
        SimulationSuperLink(workdir, log_file=engine_log, ray_address=ray_address) as superlink,
        open(engine_log, "a", encoding="utf-8") as output,
    ):
        runner = superlink.submit(app_dir, federation, output)
        shown = 0
        try:
            while runner.poll() is None:
                shown = _show_new_rounds(run_dir, shown, observer)
                time.sleep(0.5)
        finally:
            # `flwr run` only streams the log: a short grace keeps the stop within STOP_BOUND_S.
            stop_process_group(runner, grace_s=3.0)
        _show_new_rounds(run_dir, shown, observer)


def _show_new_rounds(run_dir: RunDirectory, shown: int, observer: Observer) -> int:
    history = run_dir.read_metrics()
    for record in history[shown:]:
        observer(record)
    return len(history)
