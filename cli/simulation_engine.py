"""A private, loopback-only Flower SuperLink in simulation mode, and runs submitted to it.

``fedscan simulate`` runs on Flower's own engine the way Flower intends
(``flwr run`` against a SuperLink started with ``--simulation``), but owns
every process: a free loopback port, its own FLWR_HOME, no telemetry, no
runtime dependency installation, and everything stopped on exit — Flower's
``:local:`` SuperLink would outlive the command and be silently reused.

With ``ray_address`` the Simulation Engine joins that existing Ray cluster (Ray's driver reads
``RAY_ADDRESS``) instead of starting one; the cluster is the operator's and is left running.

"Everything" is the SuperLink's whole tree (``flwr-simulation`` and the Ray
cluster run in sessions of their own) and, where ``fedscan simulate`` is a
child subreaper, any helper orphaned on the way; it is stopped on any exit
from the ``with`` block, including a failed start and a stop signal turned
into KeyboardInterrupt (:class:`~fedscan.common.signals.StopSignals`), within
:data:`~fedscan.common.processes.STOP_BOUND_S`.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from fedscan.common.errors import EngineError
from fedscan.common.processes import (
    FLOWER_BIN,
    flower_env,
    free_port,
    stop_orphans,
    stop_process_group,
)

log = logging.getLogger(__name__)

SIMULATION_CONNECTION = "fedscan-simulation"  # the FLWR_HOME connection of the private SuperLink


def check_ray_cluster(address: str, timeout_s: float = 5.0) -> None:
    """Fail early, with what to do, when no Ray cluster answers at ``address`` (HOST:PORT)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except OSError as exc:
        raise EngineError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}). Start its head with "
            f"`ray start --head --port {port}` (and each other node with `ray start --address "
            f"{address}`), or leave out --ray-address to simulate on a private local Ray."
        ) from None


class SimulationSuperLink:
    """Context manager: a SuperLink in simulation mode on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        *,
        log_file: Path,
        start_timeout_s: float = 60.0,
        ray_address: str = "",
    ) -> None:
        self.workdir = workdir
        self.ray_address = ray_address
        self.home = workdir / "flwr-home"
        self.port = free_port()
        self.log_file = log_file
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self._log: IO[str] | None = None

    @property
    def env(self) -> dict[str, str]:
        # Ray's driver joins the cluster RAY_ADDRESS names, and only the one asked for: a value
        # left in the operator's shell must not send a local simulation elsewhere.
        env = {k: v for k, v in flower_env(self.home).items() if k != "RAY_ADDRESS"}
        return {**env, "RAY_ADDRESS": self.ray_address} if self.ray_address else env

    def __enter__(self) -> SimulationSuperLink:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            "[superlink]\ndefault = "
            f'"{SIMULATION_CONNECTION}"\n\n[superlink.{SIMULATION_CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8",
        )
        self._log = open(self.log_file, "a", encoding="utf-8")
        command = [
            str(FLOWER_BIN / "flower-superlink"),
            "--simulation",
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--health-server-address",
            f"127.0.0.1:{free_port()}",
        ]
        # Started in the private work folder: Ray workers import from the SuperLink's cwd first.
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        try:
            self._wait_until_listening()
        except BaseException:  # a failed start or a stop signal: __exit__ would not run
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EngineError(f"Flower's SuperLink exited at start; see {self.log_file}.")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise EngineError(
            f"Flower's SuperLink did not start within {self.start_timeout_s:g} s; "
            f"see {self.log_file}."
        )

    def submit(self, app_dir: Path, federation_config: str, output: IO[str]) -> subprocess.Popen:
        """``flwr run --stream``: returns the process, which ends when the run ends."""
        command = [
            str(FLOWER_BIN / "flwr"),
            "run",
            str(app_dir),
            SIMULATION_CONNECTION,
            "--stream",
            "--federation-config",
            federation_config,
        ]
        return subprocess.Popen(
            command,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=app_dir,
            start_new_session=True,
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            stop_orphans()  # a Ray worker whose raylet died before the SuperLink was stopped
        if self._log is not None:
            self._log.close()
