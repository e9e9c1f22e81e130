"""A private, loopback-only Flower SuperLink in simulation mode, and runs submitted to it.

``fedscan simulate`` runs on Flower's own engine the way Flower intends
(``flwr run`` against a SuperLink started with ``--simulation``), but owns
every process: a free loopback port, its own FLWR_HOME, no telemetry, no
runtime dependency installation, and everything stopped on exit — Flower's
``:local:`` SuperLink would outlive the command and be silently reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from fedscan import __version__
from fedscan.cli.processes import stop_process_group
from fedscan.common.errors import FedscanError

log = logging.getLogger(__name__)

CONNECTION = "fedscan-simulation"
FLOWER_BIN = Path(sys.executable).parent  # flwr, flower-superlink, … of this environment


class EngineError(FedscanError):
    """The local Flower engine could not be started or did not accept the run."""

    code = "engine-failed"


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process this command starts."""
    # The SuperLink starts its helpers (flower-superexec, flwr-simulation) by name.
    path = os.pathsep.join([str(FLOWER_BIN), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "PYTHONUNBUFFERED": "1",
            # SuperExec starts an app at most this long after it is due (Flower's default: 1 s).
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def toml_value(value: Any) -> str:
    """A scalar in TOML (JSON string escapes are valid TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def write_app(folder: Path, run_config: dict[str, Any], *, name: str = "fedscan-simulation") -> Path:
    """A Flower app folder holding configuration only: its components are the installed fedscan."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[project]", f'name = "{name}"', f'version = "{__version__}"',
             'description = "fedscan run (configuration only)"', 'license = "Apache-2.0"',
             "dependencies = []", "", "[tool.flwr.app]", 'publisher = "fedscan"', "",
             "[tool.flwr.app.components]", 'serverapp = "fedscan.server.app:app"',
             'clientapp = "fedscan.client.app:app"', "", "[tool.flwr.app.config]"]
    lines += [f"{json.dumps(key)} = {toml_value(value)}" for key, value in run_config.items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


class LocalSuperLink:
    """Context manager: a SuperLink in simulation mode on a free loopback port."""

    def __init__(self, workdir: Path, *, log_file: Path, start_timeout_s: float = 60.0) -> None:
        self.workdir = workdir
        self.home = workdir / "flwr-home"
        self.port = free_port()
        self.log_file = log_file
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self._log: IO[str] | None = None

    @property
    def env(self) -> dict[str, str]:
        return flower_env(self.home)

    def __enter__(self) -> "LocalSuperLink":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n', encoding="utf-8")
        self._log = open(self.log_file, "a", encoding="utf-8")
        command = [str(FLOWER_BIN / "flower-superlink"), "--simulation", "--insecure",
                   "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                   "--port", str(self.port), "--health-server-address", f"127.0.0.1:{free_port()}"]
        # Started in the private work folder: Ray workers import from the SuperLink's cwd first.
        self.process = subprocess.Popen(command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)
        self._wait_until_listening()
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
        raise EngineError(f"Flower's SuperLink did not start within {self.start_timeout_s:g} s; "
                          f"see {self.log_file}.")

    def submit(self, app_dir: Path, federation_config: str, output: IO[str]) -> subprocess.Popen:
        """``flwr run --stream``: returns the process, which ends when the run ends."""
        command = [str(FLOWER_BIN / "flwr"), "run", str(app_dir), CONNECTION, "--stream",
                   "--federation-config", federation_config]
        return subprocess.Popen(command, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=app_dir, start_new_session=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.process is not None:
            stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
