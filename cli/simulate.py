"""``fedscan simulate``: the whole federation on one machine, on Flower's Simulation Engine.

ServerApp and ClientApp are built in-process from one validated RunConfig and
run by Flower's Simulation Engine (Ray backend: each site's ClientApp runs in
a worker process). Nothing is installed at run time, no SuperLink is left
behind, and Ray is shut down before this returns.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from fedscan.common.config import RunConfig
from fedscan.common.data import load_npz_split
from fedscan.common.device import resolve_device
from fedscan.common.errors import ConfigError, DataError, FedscanError
from fedscan.common.partition import parse_partition
from fedscan.common.sources import DicomSource, NpzShardSource, SiteSource
from fedscan.common.synth import SynthConfig, generate_sites

log = logging.getLogger(__name__)


class RunFailed(FedscanError):
    """The federation started but did not finish with a model."""

    code = "run-failed"


@dataclass(frozen=True)
class DataChoice:
    """``synthetic``, ``npz:PATH`` or ``dicom:DIR`` (a folder of site folders)."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> "DataChoice":
        if text == "synthetic":
            return cls("synthetic")
        kind, _, path = text.partition(":")
        if kind not in ("npz", "dicom") or not path:
            raise ConfigError(f"Unknown --data {text!r}; use synthetic, npz:PATH or dicom:DIR.")
        resolved = Path(path).expanduser().resolve()
        if not resolved.exists():
            raise DataError(f"--data path does not exist: {path}")
        return cls(kind, resolved)


@dataclass(frozen=True)
class SimulationSites:
    """Maps a simulated node (its partition id) to that site's data source."""

    sources: tuple[SiteSource, ...]

    def __call__(self, context: Any) -> SiteSource:
        return self.sources[int(context.node_config["partition-id"])]


def plan_sources(choice: DataChoice, *, sites: int, partition: str, seed: int,
                 images_per_site: int, workdir: Path) -> tuple[SiteSource, ...]:
    """Validate the data choice up front (before Ray starts) and describe each site."""
    parse_partition(partition)
    if choice.kind != "npz" and partition != "iid":
        raise ConfigError("--partition applies to --data npz:PATH only; DICOM sites are already "
                          "partitioned by hospital.")
    if choice.kind == "npz":
        for split in ("train", "val"):
            load_npz_split(choice.path, split)  # fail fast on an unreadable file
        return tuple(NpzShardSource(f"site-{i}", str(choice.path), i, sites, partition, seed)
                     for i in range(sites))
    if choice.kind == "dicom":
        site_dirs = sorted(p for p in choice.path.iterdir() if (p / "labels.csv").is_file())
        if len(site_dirs) < sites:
            raise DataError(f"--data dicom:DIR holds {len(site_dirs)} site folders with labels.csv; "
                            f"--sites asks for {sites}.")
        return tuple(DicomSource(p.name, str(p), seed=seed) for p in site_dirs[:sites])
    site_dirs = generate_sites(workdir / "synthetic", SynthConfig(sites, images_per_site, seed))
    return tuple(DicomSource(p.name, str(p), seed=seed) for p in site_dirs)


def flower_environment(flwr_home: Path) -> None:
    """Settings Flower reads from the environment: no telemetry, no runtime installs."""
    os.environ.setdefault("FLWR_HOME", str(flwr_home))
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def backend_config(sites: int, device: str, verbose: bool) -> dict[str, Any]:
    """One CPU per site worker; GPU shared between sites when one is used."""
    on_gpu = resolve_device(device).type == "cuda"
    cpus = os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": (1.0 / min(sites, cpus)) if on_gpu else 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 1 if on_gpu else 0,
                      "logging_level": "ERROR", "log_to_driver": verbose},
    }


def run_simulation(config: RunConfig, choice: DataChoice, *, sites: int, partition: str,
                   images_per_site: int, device: str, out: Path, console: Console,
                   verbose: bool = False) -> dict[str, Any]:
    """Run one simulated federation; return a summary dict for display."""
    from fedscan.cli.display import RoundTable
    from fedscan.server.rundir import RunDirectory

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedscan-sim-") as tmp:
        workdir = Path(tmp)
        flower_environment(workdir / "flwr-home")
        sources = plan_sources(choice, sites=sites, partition=partition, seed=config.seed,
                               images_per_site=images_per_site, workdir=workdir)
        run_dir = RunDirectory.create(out)
        data_info = {"data": choice.kind, "sites": sites, "partition": partition,
                     "images_per_site": images_per_site if choice.kind == "synthetic" else None,
                     "device": device}
        console.print(f"Run {run_dir.run_id}: {sites} sites, {config.rounds} rounds, model "
                      f"{config.train.model}, DP {'ε=' + format(config.privacy.epsilon, 'g') if config.privacy.enabled else 'OFF'}"
                      f", δ={config.privacy.delta:g} → {run_dir.path}", highlight=False)
        started = time.monotonic()
        with RoundTable(console, [s.name for s in sources]) as table:
            _run_engine(config, run_dir, sources, device, table.update, data_info, verbose)
        wall = time.monotonic() - started
    history = run_dir.read_metrics()
    return {"run_id": run_dir.run_id, "run_dir": str(run_dir.path), "wall_s": round(wall, 1),
            "final": history[-1] if history else {}, "final_model": str(run_dir.path / "final.pt"),
            "epsilon_target": config.privacy.epsilon if config.privacy.enabled else math.inf}


def _run_engine(config: RunConfig, run_dir: Any, sources: tuple[SiteSource, ...], device: str,
                observer: Any, data_info: dict[str, Any], verbose: bool) -> None:
    from flwr.simulation import run_simulation as flower_run_simulation

    from fedscan.client.app import make_client_app
    from fedscan.server.app import make_server_app

    quiet_libraries(verbose)
    server_app = make_server_app(config, run_dir, extra_config=data_info, observer=observer)
    client_app = make_client_app(SimulationSites(sources), device=device)
    try:
        flower_run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(sources),
                              backend_config=backend_config(len(sources), device, verbose),
                              verbose_logging=verbose)
    except Exception as exc:  # the ServerApp thread's failure, re-raised by Flower
        root = exc.__cause__ or exc
        log.debug("Simulation failed", exc_info=True)
        if isinstance(root, FedscanError):
            raise RunFailed(f"The federation failed: {root}") from exc
        raise RunFailed(f"The federation failed ({type(root).__name__}: {root}); rerun with "
                        "--verbose for Flower's and Ray's logs.") from exc
    if not (run_dir.path / "final.pt").exists():
        raise RunFailed("The federation ended without a final model; see the refusals above.")


def quiet_libraries(verbose: bool) -> None:
    """Flower logs every message at INFO; the round table replaces that unless --verbose."""
    level = logging.DEBUG if verbose else logging.ERROR
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(level)
