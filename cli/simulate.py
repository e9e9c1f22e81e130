"""``fedscan simulate``: the whole federation on one machine, on Flower's Simulation Engine.

The run is submitted with ``flwr run`` to a private SuperLink in simulation
mode (see :mod:`fedscan.cli.superlink`): the ServerApp and every site's
ClientApp are the installed fedscan, configured by a generated run config —
the same path a deployment takes. Progress is read from the run directory.
Nothing is installed at run time and no Flower or Ray process outlives the
command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from fedscan.cli.processes import stop_process_group
from fedscan.cli.superlink import LocalSuperLink, toml_value, write_app
from fedscan.common.config import RunConfig
from fedscan.common.crosssite import MATRIX_FILE
from fedscan.common.data import load_npz_split
from fedscan.common.device import resolve_device
from fedscan.common import defaults
from fedscan.common.errors import ConfigError, DataError, FedscanError
from fedscan.common.labels import DEFAULT_LABELS_FILE
from fedscan.common.partition import parse_partition
from fedscan.common.sources import FolderSource, NpzShardSource, SiteSource, sources_to_json
from fedscan.common.synth import SynthConfig, generate_sites

log = logging.getLogger(__name__)


SIMULATION_FILE = "simulation.json"  # how the sites were simulated: what --resume rebuilds them from


class RunFailed(FedscanError):
    """The federation started but did not finish with a model."""

    code = "run-failed"


@dataclass(frozen=True)
class DataChoice:
    """``synthetic``, ``npz:PATH``, or ``dicom:DIR[,DIR...]``.

    For ``dicom``, each DIR is one site folder with its ``labels.csv``; a single
    DIR without ``labels.csv`` is a folder of such site folders.
    """

    kind: str
    paths: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "DataChoice":
        if text == "synthetic":
            return cls("synthetic")
        kind, _, listed = text.partition(":")
        if kind not in ("npz", "dicom") or not listed:
            raise ConfigError(f"Unknown --data {text!r}; use synthetic, npz:PATH or dicom:DIR[,DIR...].")
        paths = tuple(Path(item).expanduser().resolve() for item in listed.split(",") if item.strip())
        for path in paths:
            if not path.exists():
                raise DataError(f"--data path does not exist: {path}")
        if kind == "npz" and len(paths) != 1:
            raise ConfigError("--data npz:PATH takes one file; the sites are its partitions.")
        return cls(kind, paths)

    @property
    def path(self) -> Path | None:
        return self.paths[0] if self.paths else None

    def site_folders(self) -> list[Path]:
        """The site folders of a ``dicom`` choice, each checked for its labels CSV."""
        if len(self.paths) == 1 and not (self.paths[0] / DEFAULT_LABELS_FILE).is_file():
            return sorted(p for p in self.paths[0].iterdir() if (p / DEFAULT_LABELS_FILE).is_file())
        for folder in self.paths:
            if not (folder / DEFAULT_LABELS_FILE).is_file():
                raise DataError(f"{folder} has no {DEFAULT_LABELS_FILE}; every site folder needs one "
                                "(check it with `fedscan data check`).")
        return list(self.paths)

    def describe(self) -> str:
        return self.kind if not self.paths else f"{self.kind}:{','.join(map(str, self.paths))}"


def count_sites(choice: DataChoice, requested: int | None) -> int:
    """Sites in the federation: the folders listed for ``dicom``, else ``--sites``."""
    if choice.kind != "dicom" or len(choice.paths) == 1 and requested is not None:
        return defaults.SITES if requested is None else requested
    found = len(choice.site_folders())
    if requested is not None and requested != found:
        raise ConfigError(f"--sites {requested} disagrees with the {found} site folders given in --data.")
    return found


def plan_sources(choice: DataChoice, *, sites: int, partition: str, seed: int,
                 images_per_site: int, workdir: Path, cache_dir: str = "") -> tuple[SiteSource, ...]:
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
        site_dirs = choice.site_folders()
        if len(site_dirs) < sites:
            raise DataError(f"--data {choice.describe()} holds {len(site_dirs)} site folders with "
                            f"{DEFAULT_LABELS_FILE}; --sites asks for {sites}.")
    else:
        site_dirs = generate_sites(workdir / "synthetic", SynthConfig(sites, images_per_site, seed))
    names = _unique_names([p.name for p in site_dirs[:sites]])
    return tuple(FolderSource(name, str(p), seed=seed, cache_dir=cache_dir)
                 for name, p in zip(names, site_dirs[:sites]))


def _unique_names(names: list[str]) -> list[str]:
    """Folder names as site names; repeated ones (…/a/site, …/b/site) get a suffix."""
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]


def federation_config(sites: int, device: str, verbose: bool) -> str:
    """Simulation Engine resources: one CPU per site worker; a GPU shared when one is used."""
    on_gpu = resolve_device(device).type == "cuda"
    cpus = os.cpu_count() or 1
    values = {"num-supernodes": sites, "client-resources-num-cpus": 1,
              "client-resources-num-gpus": (1.0 / min(sites, cpus)) if on_gpu else 0.0,
              "init-args-num-cpus": cpus, "init-args-num-gpus": 1 if on_gpu else 0,
              "init-args-logging-level": "INFO" if verbose else "ERROR",
              "init-args-log-to-driver": verbose}
    return " ".join(f"{key}={toml_value(value)}" for key, value in values.items())


def run_simulation(config: RunConfig, choice: DataChoice, *, sites: int, partition: str,
                   images_per_site: int, device: str, out: Path, console: Console,
                   cache_dir: str = "", verbose: bool = False, resume_id: str | None = None) -> dict[str, Any]:
    """Run one simulated federation (or continue run ``resume_id`` in ``out``); a summary for display."""
    from fedscan.cli.display import RoundTable
    from fedscan.server.rundir import RunDirectory

    if config.train.task == "segmentation" and choice.kind == "npz":
        raise ConfigError("An npz file holds no masks: segmentation runs on site folders whose labels CSV names "
                          "a mask per image (--data synthetic or dicom:DIR,...).")
    with tempfile.TemporaryDirectory(prefix="fedscan-sim-") as tmp:
        workdir = Path(tmp)
        # Synthetic sites and npz partitions follow the run's seed: a resumed run sees the same data.
        sources = plan_sources(choice, sites=sites, partition=partition, seed=config.seed,
                               images_per_site=images_per_site, workdir=workdir, cache_dir=cache_dir)
        if resume_id is None:
            run_dir = RunDirectory.create(out.resolve())
            described = {"data": choice.describe(),
                         "sites": sites, "partition": partition, "device": device,
                         "images_per_site": images_per_site if choice.kind == "synthetic" else None}
            (run_dir.path / SIMULATION_FILE).write_text(json.dumps(described, indent=2))
        else:
            run_dir = RunDirectory(out.resolve() / resume_id, resume_id)
        run_config = {**config.to_flat(), "runs-dir": str(run_dir.path.parent), "run-id": run_dir.run_id,
                      "device": device, "simulation-sites": sources_to_json(sources),
                      "resume": resume_id is not None}
        app_dir = write_app(workdir / "app", run_config)
        _announce(console, config, sites, run_dir)
        started = time.monotonic()
        with RoundTable(console, [s.name for s in sources], segmentation=config.train.task == "segmentation") as table:
            _run_engine(workdir, app_dir, run_dir, federation_config(sites, device, verbose), table.update)
        wall = time.monotonic() - started
    status = run_dir.read_status()
    if status.get("state") != "completed":
        reason = status.get("reason") or f"the engine stopped early; see {run_dir.path / 'coordinator.log'}"
        raise RunFailed(f"The federation failed: {reason}")
    history = run_dir.read_metrics()
    matrix_file = run_dir.path / MATRIX_FILE
    return {"run_id": run_dir.run_id, "run_dir": str(run_dir.path), "wall_s": round(wall, 1),
            "cross_site": json.loads(matrix_file.read_text()) if matrix_file.is_file() else None,
            "final": history[-1] if history else {}, "final_model": str(run_dir.path / "final.pt"),
            "epsilon_target": config.privacy.epsilon if config.privacy.enabled else math.inf,
            "central_delta": config.central_delta}


def resume_simulation(out: Path, run_id: str, *, console: Console, cache_dir: str = "",
                      verbose: bool = False) -> dict[str, Any]:
    """Continue simulated run ``run_id`` in ``out`` after its coordinator stopped (killed, crashed)."""
    from fedscan.server.resume import resumable_config
    from fedscan.server.rundir import RunDirectory

    run_dir = RunDirectory(out.resolve() / run_id, run_id)
    described_file = run_dir.path / SIMULATION_FILE
    if not described_file.is_file():
        raise ConfigError(f"{run_dir.path} is not a simulated run (no {SIMULATION_FILE}); "
                          "check --out and the run id.")
    described = json.loads(described_file.read_text())
    config = resumable_config(run_dir)
    console.print(f"Resuming run {run_id} from its last checkpoint", highlight=False)
    return run_simulation(config, DataChoice.parse(described["data"]), sites=int(described["sites"]),
                          partition=str(described["partition"]), device=str(described["device"]),
                          images_per_site=int(described.get("images_per_site") or defaults.IMAGES_PER_SITE),
                          out=out, console=console, cache_dir=cache_dir, verbose=verbose, resume_id=run_id)


def _announce(console: Console, config: RunConfig, sites: int, run_dir: Any) -> None:
    privacy = config.privacy
    dp = f"ε={privacy.epsilon:g}, δ={privacy.delta:g}" if privacy.enabled else "OFF"
    rounds = f"{config.rounds} round{'s' if config.rounds != 1 else ''}"
    console.print(f"Run {run_dir.run_id}: {sites} sites, {rounds}, model {config.train.model}, "
                  f"DP {dp} → {run_dir.path}", highlight=False, soft_wrap=True)


def _run_engine(workdir: Path, app_dir: Path, run_dir: Any, federation: str,
                observer: Callable[[dict[str, Any]], None]) -> None:
    """Submit the run to a private SuperLink and feed each new round to ``observer``."""
    engine_log = run_dir.path / "coordinator.log"
    with LocalSuperLink(workdir, log_file=engine_log) as superlink, \
            open(engine_log, "a", encoding="utf-8") as output:
        runner = superlink.submit(app_dir, federation, output)
        shown = 0
        try:
            while runner.poll() is None:
                shown = _show_new_rounds(run_dir, shown, observer)
                time.sleep(0.5)
        finally:
            stop_process_group(runner)
        _show_new_rounds(run_dir, shown, observer)


def _show_new_rounds(run_dir: Any, shown: int, observer: Callable[[dict[str, Any]], None]) -> int:
    history = run_dir.read_metrics()
    for record in history[shown:]:
        observer(record)
    return len(history)
