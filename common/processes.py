"""Starting and stopping the Flower daemons fedscan runs (SuperLink, SuperNode, the simulation
engine): their executables, their environment, free ports, and stopping whole process trees with
bounded waits.

Nothing here imports Flower: it names Flower's executables and environment variables only, for the
client (SuperNode), the server (SuperLink) and the simulation to share.

Flower's daemons start helpers in sessions of their own (``flower-superexec``
calls setsid, and the ServerApp, ``flwr-simulation`` and Ray run in its
group), so signalling one process group leaves the rest running. Here the
whole tree under a process is found (Linux ``/proc``) before anything is
signalled, every group in it is stopped, the tree is looked at again for
helpers started meanwhile, and the call returns only once none of those
processes is alive (zombies excepted: they have exited).

Invariants of a supervising command (``server start``, ``client start``, ``simulate``):

- it is a child subreaper (``common/signals.py``, Linux): a helper whose parent dies is
  re-parented to it, not to init, so :func:`stop_orphans` still finds and stops it;
- it notes SIGTERM, SIGHUP and SIGINT (``common/signals.py``) instead of ending at once, then
  stops its tree and exits;
- from a signal to the whole tree gone takes at most :data:`STOP_BOUND_S`.
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

from fedscan.common.signals import is_subreaper

log = logging.getLogger(__name__)
_PROC = Path("/proc")
# The helper both Flower daemons start: the SuperLink for each run's ServerApp, the SuperNode for
# each message's ClientApp.
SUPEREXEC = "flower-superexec"
FLOWER_BIN = Path(sys.executable).parent  # flwr, flower-superlink, … of this environment

# SIGTERM → SIGKILL: Flower's daemons stop their gRPC servers with a 1 s grace and give SuperExec
# 1 s more; measured 1-3 s for a SuperLink, SuperNode or simulation on 2 busy cores.
STOP_GRACE_S = 10.0
KILL_WAIT_S = 3.0  # SIGKILL → gone: the kernel needs milliseconds; a process in D state longer
ORPHAN_GRACE_S = 3.0  # orphans had their SIGTERM with their tree already
# A signal to a whole tree gone, worst case (every SIGTERM ignored): the supervisor noticing
# (0.5 s), its child's tree (grace + kill wait) and the orphans (3 + 3 s) = 19.5 s; `simulate`
# stops its `flwr run` first with a 3 s grace: 25.5 s. Measured 0.1-2.6 s for every command and
# signal (tests/test_signals.py). Under systemd's TimeoutStopSec=60 (deploy/systemd), so a stop
# never escalates to systemd's SIGKILL.
STOP_BOUND_S = 30.0


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


def _read(pid: int, what: str) -> bytes:
    """/proc/PID/WHAT (empty once the process is gone)."""
    try:
        return (_PROC / str(pid) / what).read_bytes()
    except OSError:
        return b""


def _fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    text = _read(pid, "stat").decode(errors="replace")
    return text[text.rindex(")") + 2 :].split() if text else None


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group, state) of ``pid``; None once it is gone."""
    fields = _fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[2]), fields[0])


def _started(pid: int) -> str | None:
    """When ``pid`` started (ticks since boot): tells it from a later process reusing the pid."""
    fields = _fields(pid)
    return None if fields is None else fields[19]


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


def command_line(pid: int) -> str:
    """The command line of ``pid`` ("" once it is gone)."""
    return _read(pid, "cmdline").replace(b"\0", b" ").decode(errors="replace")


def find_descendant(pid: int, name: str) -> int | None:
    """The first process below ``pid`` whose command line holds ``name``, or whose process name
    is its first 15 characters (as the kernel keeps it): then it may be a zombie that exited
    and waits to be reaped, which :func:`alive` tells, so a helper that died between two looks
    is still seen."""
    for found in descendants(pid):
        if name in command_line(found) or _name(found) == name[:15]:
            return found
    return None


def _name(pid: int) -> str:
    """The kernel's name of ``pid`` (its executable's or script's, 15 characters at most)."""
    text = _read(pid, "stat").decode(errors="replace")
    return text[text.index("(") + 1 : text.rindex(")")] if text else ""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: it only waits to be reaped)."""
    info = _stat(pid)
    return info is not None and info[2] != "Z"


def _snapshot(pids: list[int]) -> dict[int, str]:
    """``pids`` and everything below them, each with its start time."""
    found = {pid for root in pids for pid in (root, *descendants(root))}
    return {pid: started for pid in found if (started := _started(pid)) is not None}


def _signal_tree(tree: dict[int, str], sig: signal.Signals) -> None:
    """``sig`` to every group in ``tree`` but this process's own, and to each of its members."""
    own = os.getpgrp()
    groups = {info[1] for pid in tree if (info := _stat(pid)) is not None} - {own}
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid, started in tree.items():
        if pid != os.getpid() and _started(pid) == started:  # not a later process on that pid
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _wait_gone(tree: dict[int, str], within_s: float) -> list[int]:
    """Wait until no process of ``tree`` runs; those still running after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        left = [pid for pid, started in tree.items() if alive(pid) and _started(pid) == started]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _reap(tree: dict[int, str], skip: int) -> None:
    """Collect orphans re-parented to this subreaper once they exit (else they stay zombies)."""
    for pid in tree:
        if pid != skip and (info := _stat(pid)) is not None and info[0] == os.getpid():
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def stop_process_group(
    process: subprocess.Popen, grace_s: float = STOP_GRACE_S, *, gone_within_s: float = KILL_WAIT_S
) -> None:
    """SIGTERM ``process`` and every process below it, SIGKILL what is left, wait until all are
    gone."""
    tree = _snapshot([process.pid])
    if process.poll() is None:
        _signal_tree(tree, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "Flower process %s ignored SIGTERM for %s s; killing it", process.pid, grace_s
            )
    # Helpers started during the grace, below members still alive.
    tree.update(_snapshot([pid for pid in tree if alive(pid)]))
    _signal_tree(tree, signal.SIGKILL)
    try:
        process.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:  # in uninterruptible sleep: reported below, not waited on
        pass
    if left := _wait_gone(tree, gone_within_s):
        log.warning("Processes %s were still running %s s after SIGKILL", left, gone_within_s)
    _reap(tree, skip=process.pid)


def stop_orphans(*, grace_s: float = ORPHAN_GRACE_S) -> None:
    """Stop every helper re-parented to this subreaper (none when it is not one).

    Call it once this command's own children are stopped: whatever is still below it then is an
    orphan of theirs (a Ray worker whose raylet died, a ServerApp whose SuperExec died).
    """
    if not is_subreaper() or not (tree := _snapshot(descendants(os.getpid()))):
        return
    log.info("Stopping %s orphaned helper processes", len(tree))
    _signal_tree(tree, signal.SIGTERM)
    _wait_gone(tree, grace_s)
    tree.update(_snapshot([pid for pid in tree if alive(pid)]))
    _signal_tree(tree, signal.SIGKILL)
    _wait_gone(tree, KILL_WAIT_S)
    _reap(tree, skip=-1)


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout_s: float = 60.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False
