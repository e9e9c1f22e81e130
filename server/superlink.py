"""The coordinator's Flower SuperLink (``fedscan server start``) and the operator's ``flwr``
commands to it.

The SuperLink runs in the foreground (for systemd or a container), with TLS,
site authentication, its state in an on-disk database, runtime dependency
installation and telemetry off. Its working folder is the state folder, so
run directories land in ``STATE/runs``. The operator's own commands reach its
control API through the connection :data:`DEPLOYMENT_CONNECTION` in ``STATE/flwr-home``.

``serve`` owns the SuperLink's whole tree: it is a child subreaper, so the
SuperExec and the ServerApps (which Flower starts in sessions of their own)
stay below it; SIGTERM, SIGHUP and SIGINT stop that tree within
:data:`~fedscan.common.processes.STOP_BOUND_S` and exit 0. It never lives on
beside a dead child: when the SuperLink or its SuperExec (which starts every
run's ServerApp) exits on its own, the rest is stopped and ``serve`` returns
non-zero with a message naming what died, so systemd's ``Restart=on-failure``
starts the coordinator again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from fedscan.common.addresses import join_address, split_address
from fedscan.common.errors import FedscanError
from fedscan.common.files import atomic_write_bytes
from fedscan.common.processes import (
    FLOWER_BIN,
    SUPEREXEC,
    alive,
    find_descendant,
    flower_env,
    stop_orphans,
    stop_process_group,
)
from fedscan.common.signals import StopSignals, become_subreaper
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.superlink_launcher import ACCESS_LOG_ENV

DEPLOYMENT_CONNECTION = (
    "fedscan"  # the FLWR_HOME connection of the operator's commands to this SuperLink
)


def superlink_command(config: CoordinatorConfig, *, insecure: bool) -> list[str]:
    """The ``flower-superlink`` command line for ``config``."""
    host, port = split_address(config.control_address)
    command = [
        sys.executable,  # Flower's flower-superlink, access log off, longer SQLite lock wait
        "-m",
        "fedscan.server.superlink_launcher",
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
    host, port = config.control_host, split_address(config.control_address)[1]
    lines = [
        "[superlink]",
        f'default = "{DEPLOYMENT_CONNECTION}"',
        "",
        f"[superlink.{DEPLOYMENT_CONNECTION}]",
        f'address = "{join_address(host, port)}"',
    ]
    if insecure or config.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(config.tls.ca_certificate))}")
    config.flwr_home.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(config.flwr_home / "config.toml", ("\n".join(lines) + "\n").encode())


# The SuperLink starts its SuperExec right after its gRPC servers: measured within 0.1 s of its
# ports listening, 3-6 s after launch on 2 busy cores; one without it this long runs nothing.
SUPEREXEC_START_S = 120.0
WATCH_S = 0.5  # how often the SuperLink and its SuperExec are checked


def serve(config: CoordinatorConfig, *, insecure: bool) -> int:
    """Run the SuperLink until it or its SuperExec exits, or this process is told to stop.

    0 after a stop signal; otherwise non-zero, with what died and what to do printed on stderr.
    """
    config.validate(insecure=insecure)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.runs_dir.mkdir(exist_ok=True)
    write_connection(config, insecure=insecure)
    become_subreaper()
    with StopSignals() as stop:
        process = subprocess.Popen(
            superlink_command(config, insecure=insecure),
            env={**flower_env(config.flwr_home), ACCESS_LOG_ENV: "1" if config.access_log else ""},
            cwd=config.state_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            problem = _watch(process, stop)
        finally:
            stop_process_group(process)
            stop_orphans()
    if problem is None:
        return 0
    message, code = problem
    print(f"fedscan server start: {message}", file=sys.stderr, flush=True)
    return code


def _watch(process: subprocess.Popen, stop: StopSignals) -> tuple[str, int] | None:
    """Wait for a stop signal (None) or for the SuperLink or its SuperExec to die (what died, and
    the exit code to give: the SuperLink's own where it failed, else 1)."""
    started, superexec = time.monotonic(), None
    while not stop.sleep(WATCH_S):
        if process.poll() is not None:
            return (
                f"the SuperLink exited on its own (exit {process.returncode}); its output above "
                "says why. Fix that and start the coordinator again.",
                process.returncode if process.returncode > 0 else 1,
            )
        if superexec is None:
            superexec = find_descendant(process.pid, SUPEREXEC)
            if superexec is None and time.monotonic() - started > SUPEREXEC_START_S:
                return (
                    f"the SuperLink started no {SUPEREXEC} within {SUPEREXEC_START_S:g} s, so no "
                    "run could start; stopped it. Check that flower-superexec is installed "
                    "beside flower-superlink.",
                    1,
                )
        elif not alive(superexec):
            return (
                f"the SuperLink's {SUPEREXEC} (pid {superexec}) exited, so no run could start; "
                "stopped the SuperLink too. Start the coordinator again (systemd does so).",
                1,
            )
    return None


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
