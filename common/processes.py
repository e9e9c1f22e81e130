"""Starting and stopping the Flower daemons fedscan runs (SuperLink, SuperNode, the simulation
engine): their executables, their environment, free ports, and stopping whole process trees with
bounded waits.

Nothing here imports Flower: it names Flower's executables and environment variables only, for the
client (SuperNode), the server (SuperLink) and the simulation to share.

Flower's daemons start helpers in sessions of their own (``flower-superexec``
calls setsid, and the ServerApp, ``flwr-simulation`` and Ray run in its
group), so signalling one process group leaves the rest running. Here the
whole tree under a process is found (Linux ``/proc``) before anything is
signalled, every group in it is stopped, and the call returns only once
none of those processes is alive (zombies excepted: they have exited).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_PROC = Path("/proc")
FLOWER_BIN = Path(sys.executable).parent  # flwr, flower-superlink, … of this environment


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process this command starts."""
    # The SuperLink starts its helpers (flower-superexec, flwr-simulation) by name.
    path = os.pathsep.join([str(FLOWER_BIN), os.environ.get("PATH", "")])
    return {
        **os.environ,
        "PATH": path,
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
        # SuperExec starts an app at most this long after it is due (Flower's default: 1 s).
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of ``pid``; None once it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[
        text.rindex(")") + 2 :
    ].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[2]), fields[0]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (empty where /proc is unavailable)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.glob("[0-9]*"):
        info = _stat(int(entry.name))
        if info is not None:
            children.setdefault(info[0], []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        found += (batch := [child for parent in frontier for child in children.get(parent, [])])
        frontier = batch
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: it only waits to be reaped)."""
    info = _stat(pid)
    return info is not None and info[2] != "Z"


def _signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process_group(
    process: subprocess.Popen, grace_s: float = 15.0, *, gone_within_s: float = 10.0
) -> None:
    """SIGTERM ``process`` and every process below it, SIGKILL what is left, wait until all are
    gone."""
    tree = [process.pid, *descendants(process.pid)]
    groups = {process.pid} | {info[1] for pid in tree if (info := _stat(pid)) is not None}
    groups.discard(os.getpgrp())  # never this process's own group
    if process.poll() is None:
        _signal_groups(groups, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("Flower process %s ignored SIGTERM; killing it", process.pid)
    _signal_groups(groups, signal.SIGKILL)  # helpers that outlived their parent
    process.wait()
    deadline = time.monotonic() + gone_within_s
    while (left := [pid for pid in tree if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        log.warning("Processes %s were still running %s s after SIGKILL", left, gone_within_s)


def forward_stop_signals(process: subprocess.Popen) -> None:
    """SIGTERM/SIGINT to this process are passed on to ``process``'s group; the caller's wait()
    then returns. (Only signals: waiting inside a handler would deadlock on the wait the main
    thread holds.)"""

    def forward(signum: int, frame: Any) -> None:
        _signal_groups({process.pid}, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout_s: float = 60.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False
