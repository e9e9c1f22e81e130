"""The coordinator's Flower SuperLink (``fedscan server start``) and the operator's ``flwr``
commands to it.

The SuperLink runs in the foreground (for systemd or a container), with TLS,
site authentication, its state in an on-disk database, runtime dependency
installation and telemetry off. Its working folder is the state folder, so
run directories land in ``STATE/runs``. The operator's own commands reach its
control API through the connection :data:`DEPLOYMENT_CONNECTION` in ``STATE/flwr-home``.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from fedscan.common.config import split_address
from fedscan.common.errors import FedscanError
from fedscan.common.files import atomic_write_bytes
from fedscan.common.processes import (
    FLOWER_BIN,
    flower_env,
    forward_stop_signals,
    stop_process_group,
)
from fedscan.server.coordinator_config import CoordinatorConfig

DEPLOYMENT_CONNECTION = (
    "fedscan"  # the FLWR_HOME connection of the operator's commands to this SuperLink
)


def superlink_command(config: CoordinatorConfig, *, insecure: bool) -> list[str]:
    """The ``flower-superlink`` command line for ``config``."""
    host, port = split_address(config.control_address)
    command = [
        str(FLOWER_BIN / "flower-superlink"),
        "--fleet-api-address",
        config.fleet_address,
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(config.state_dir / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if config.health_address:
        command += ["--health-server-address", config.health_address]
    if insecure or config.tls is None:
        return command + ["--insecure"]
    command += [
        "--ssl-ca-certfile",
        str(config.tls.ca_certificate),
        "--ssl-certfile",
        str(config.tls.certificate),
        "--ssl-keyfile",
        str(config.tls.private_key),
    ]
    return command + (["--enable-supernode-auth"] if config.site_authentication else [])


def write_connection(config: CoordinatorConfig, *, insecure: bool) -> None:
    """``STATE/flwr-home/config.toml``: how the operator's commands reach this SuperLink's control
    API."""
    host, port = split_address(config.control_address)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    lines = [
        "[superlink]",
        f'default = "{DEPLOYMENT_CONNECTION}"',
        "",
        f"[superlink.{DEPLOYMENT_CONNECTION}]",
        f'address = "{host}:{port}"',
    ]
    if insecure or config.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(config.tls.ca_certificate))}")
    config.flwr_home.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(config.flwr_home / "config.toml", ("\n".join(lines) + "\n").encode())


def serve(config: CoordinatorConfig, *, insecure: bool) -> int:
    """Run the SuperLink until it exits or this process is told to stop; return its exit code."""
    config.validate(insecure=insecure)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.runs_dir.mkdir(exist_ok=True)
    write_connection(config, insecure=insecure)
    process = subprocess.Popen(
        superlink_command(config, insecure=insecure),
        env=flower_env(config.flwr_home),
        cwd=config.state_dir,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    forward_stop_signals(process)
    try:
        return process.wait()
    finally:
        stop_process_group(process)


def flwr(config: CoordinatorConfig, *args: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """A ``flwr`` command against this coordinator, JSON output parsed; its error message raised."""
    command = [str(FLOWER_BIN / "flwr"), *args, "--format", "json"]
    try:
        result = subprocess.run(
            command,
            env=flower_env(config.flwr_home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=config.state_dir,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise FedscanError(
            f"`flwr {args[0]}` got no answer within {timeout_s:g} s; is `fedscan server start` "
            "running?"
        ) from None
    try:
        reply = json.loads(result.stdout[result.stdout.index("{") :])
    except ValueError:
        raise FedscanError(
            f"`flwr {args[0]}` gave no answer (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-300:]}"
        ) from None
    if not reply.get("success", False):
        message = str(reply.get("error-message", "unknown error")).strip().splitlines()[-1]
        raise FedscanError(
            f"The coordinator refused `flwr {' '.join(args[:2])}`: {message} "
            "(is `fedscan server start` running?)"
        )
    return reply
