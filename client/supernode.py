"""A hospital joins the federation as a Flower SuperNode (``fedscan client start``).

The SuperNode dials out to the coordinator's Fleet port (the only network
path a hospital opens: outbound gRPC over TLS), authenticates with the site's
key, and runs fedscan's ClientApp for every message with the site's own
configuration (``--node-config site-config=...``).

``fedscan client start`` supervises it; the invariants:

- never a live process that does nothing: when the SuperNode exits (the launcher ends one
  whose connection or a thread died, :mod:`fedscan.client.supernode_launcher`), its
  SuperExec dies, or it has no connection to the coordinator for :data:`DISCONNECTED_S`,
  it is stopped and started again after 2, 4, 8, 16, 32 s (:func:`backoff_s`), each with
  a line on the site's console (why, attempt k, next try in t s); when
  :data:`MAX_RESTARTS` restarts in a row did not help, the command exits non-zero, so
  systemd's ``Restart=on-failure`` takes over. A SuperNode that stayed connected for
  :data:`STABLE_S` starts the count afresh;
- a refusal that a restart cannot cure (the coordinator refuses the site's key, a bad
  address or certificate) ends the command at once, with advice;
- a coordinator that restarts is reached again within 20 s of listening again (Flower's
  retries wait at most 20 s; measured 2-9 s); a SuperNode it no longer knows is ended and restarted,
  which the coordinator admits once it has marked the old one offline (at most
  :data:`STILL_ONLINE_S`): so a site rejoins by itself within about 75 s of the
  coordinator's return (20 + 2 + 50 s);
- the console says when the SuperNode is connected (and reconnected) — the address and the
  node id only: no path and nothing of the site's data;
- SIGTERM, SIGHUP and SIGINT stop the whole tree (SuperNode, SuperExec, ClientApps) within
  :data:`~fedscan.common.processes.STOP_BOUND_S` and exit 0; the command is a child
  subreaper, so helpers orphaned by a dying SuperNode are stopped too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fedscan.client.site import SITE_CONFIG_KEY
from fedscan.client.site_config import Connection, SiteConfig
from fedscan.client.supernode_launcher import HEARTBEAT_S, POLL_ENV, Link
from fedscan.common.errors import ConfigError
from fedscan.common.processes import (
    SUPEREXEC,
    alive,
    find_descendant,
    flower_env,
    free_port,
    stop_orphans,
    stop_process_group,
)
from fedscan.common.signals import StopSignals, become_subreaper

log = logging.getLogger(__name__)

RUNNING_MARKER = (
    "supernode.running"  # present while a SuperNode runs; left behind by an unclean stop
)
# Flower marks a silent SuperNode offline after 2 missed heartbeats (every HEARTBEAT_S, set by
# the launcher); until then it refuses a new one. 20 s of slack for a loaded coordinator.
STILL_ONLINE_S = 2 * HEARTBEAT_S + 20
RETRY_S = 2.0
MARKER_TOUCH_S = 5.0
MAX_RESTARTS = 5  # failed attempts in a row, then exit non-zero: 2+4+8+16+32 s of waits
BACKOFF_FIRST_S, BACKOFF_MAX_S = 2.0, 60.0
STABLE_S = 120.0  # connected this long: the SuperNode worked, its next death is attempt 1 again
# Flower retries a lost connection itself, waiting at most 20 s between tries (full jitter): 120 s
# without one is 6 failed tries, not a blip.
DISCONNECTED_S = 120.0
WATCH_S = 0.5  # how often the SuperNode, its SuperExec and its connection are checked
# Flower's SuperNode exit codes worth translating (flower.ai/docs/framework/ref-exit-codes).
# 305 is also Flower's answer to a site it still lists as online: run_supernode retries that case
# after an unclean stop.
EXIT_ADVICE = {
    305: (
        "The coordinator refused this site's key: send {name}.pub to the coordinator operator, "
        "who runs `fedscan server sites add {name} {name}.pub`; then start again."
    ),
}
# Flower's exit codes a restart cannot cure: a bad key, TLS without a key, trusted entities,
# address, TLS or certificate settings (flwr/supercore/exit/exit_code.py).
FINAL_EXITS = frozenset({302, 303, 304, 305, 600, 602, 603, 604, 605})


def supernode_command(config: SiteConfig, config_path: Path) -> list[str]:
    """The ``flower-supernode`` command line for this site."""
    connection = _connection(config)
    command = [
        sys.executable,
        "-m",
        "fedscan.client.supernode_launcher",
        "--superlink",
        connection.address,
        "--node-config",
        f'{SITE_CONFIG_KEY}="{Path(config_path).resolve()}"',
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--max-retries",
        "20",
        "--max-wait-time",
        "600",
        *(["--isolation", "process"] if config.warm_clientapp else []),
    ]
    if connection.insecure:
        return command + ["--insecure"]
    command += ["--root-certificates", str(connection.ca_certificate)]
    return command + (
        ["--auth-supernode-private-key", str(connection.private_key)]
        if connection.private_key
        else []
    )


def _connection(config: SiteConfig) -> Connection:
    if config.connection is None:  # the pre-flight checks refuse such a site before it gets here
        raise ConfigError(
            "site.toml has no [coordinator] section; `fedscan client check` says what to add."
        )
    return config.connection


def backoff_s(attempt: int) -> float:
    """The wait before restart ``attempt`` (1, 2, …): 2, 4, 8, 16, 32 s, at most 60 s."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))


def _say(message: str) -> None:
    """A line on the site's own console (stderr; the SuperNode's log may go to a file)."""
    print(f"fedscan client start: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Attempt:
    """How one SuperNode process ended."""

    code: int  # its exit status
    flower_code: int  # the last exit code Flower printed, else the status
    reason: str  # why it ended, for the console
    connected: bool
    worked: bool


def run_supernode(config: SiteConfig, config_path: Path) -> tuple[int, str]:
    """Run and supervise the SuperNode until this process is stopped (0) or it fails for good
    (its exit code and advice); see the module's docstring for the restart rules.

    After this site's previous SuperNode died without signing off (killed, power cut), the
    coordinator lists it as online until its heartbeats are missed, and refuses to activate it
    again meanwhile: that refusal is retried until the coordinator lets go, instead of failing
    the restart.
    """
    marker = config.state_dir / RUNNING_MARKER
    # When a SuperNode of this site was last alive: the previous process, if it died unclean.
    last_alive = marker.stat().st_mtime if marker.is_file() else None
    become_subreaper()
    failures, outcome = 0, (0, "")
    with StopSignals() as stop:
        while stop.received is None:
            attempt = _supernode_once(config, config_path, marker, stop)
            if stop.received is not None:
                break
            if attempt.connected:
                last_alive = time.time()
            if attempt.flower_code == 305 and _still_online(last_alive):
                _say(f"the coordinator still lists this site as online; retrying in {RETRY_S:g} s.")
                stop.sleep(RETRY_S)
                continue
            failures = 1 if attempt.worked else failures + 1
            if attempt.flower_code in FINAL_EXITS or failures > MAX_RESTARTS:
                outcome = _give_up(attempt, failures, config.name)
                break
            _say(
                f"{attempt.reason}; restart attempt {failures} of {MAX_RESTARTS}, next try in "
                f"{backoff_s(failures):g} s."
            )
            stop.sleep(backoff_s(failures))
    marker.unlink(missing_ok=True)
    return outcome


def _still_online(last_alive: float | None) -> bool:
    return last_alive is not None and time.time() - last_alive <= STILL_ONLINE_S


def _give_up(attempt: Attempt, failures: int, name: str) -> tuple[int, str]:
    """The exit code and advice of a SuperNode that a restart cannot help."""
    # An exit status is one byte: Flower's 3-digit codes (305) would read as another (49).
    code = attempt.code if 0 < attempt.code < 256 else 1
    if attempt.flower_code in FINAL_EXITS:
        advice = EXIT_ADVICE.get(attempt.flower_code) or (
            f"The SuperNode stopped with Flower exit code {attempt.flower_code}, which a restart "
            "cannot cure (key, address, TLS or certificate settings): see the lines above and "
            "flower.ai/docs/framework/ref-exit-codes, fix site.toml, run `fedscan client check`."
        )
        return code, advice.format(name=name)
    _say(
        f"{attempt.reason}; gave up after {failures - 1} restarts. Exiting {code}, so that the "
        "service manager (systemd Restart=on-failure) starts it again."
    )
    return code, ""


def _keep_touching(marker: Path, process: subprocess.Popen) -> None:
    """Refresh the marker's time while the SuperNode runs: how recently it was alive, after a
    crash."""
    while process.poll() is None:
        marker.touch()
        time.sleep(MARKER_TOUCH_S)


def _supernode_once(
    config: SiteConfig, config_path: Path, marker: Path, stop: StopSignals
) -> Attempt:
    """One SuperNode process, watched until it ends, must be restarted, or a stop signal came.

    Its output is passed through (to ``[logging] log-dir/supernode.log`` when set) and read for
    its connection and for Flower's exit code, which the SuperNode prints but does not always
    exit with.
    """
    home = config.state_dir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    sink: TextIO = sys.stdout
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        sink = open(config.log_dir / "supernode.log", "a", encoding="utf-8")
    link = Link(_connection(config).address, DISCONNECTED_S, STABLE_S)
    process = subprocess.Popen(
        supernode_command(config, config_path),
        env={**flower_env(home), POLL_ENV: str(_connection(config).poll_interval_s)},
        cwd=config.state_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    # Read on a thread: the SuperNode's helpers inherit its output, so EOF only comes once they are
    # gone.
    reader = threading.Thread(target=_pass_through, args=(process, sink, link), daemon=True)
    reader.start()
    threading.Thread(target=_keep_touching, args=(marker, process), daemon=True).start()
    try:
        reason = _watch(process, link, stop)
    finally:
        stop_process_group(process)
        stop_orphans()
        reader.join(timeout=10)
        if sink is not sys.stdout:
            sink.close()
    code = process.returncode
    return Attempt(
        code=code,
        flower_code=link.codes[-1] if link.codes else code,
        reason=reason or link.lost_reason or f"the SuperNode exited (status {code})",
        connected=bool(link.node_id),
        worked=link.worked(),
    )


def _watch(process: subprocess.Popen, link: Link, stop: StopSignals) -> str:
    """Wait until the SuperNode must be restarted (why; "" when it exited) or a stop signal came."""
    superexec = None
    while not stop.sleep(WATCH_S):
        if process.poll() is not None:
            return ""
        if link.lost_for_s() > DISCONNECTED_S:
            return f"no connection to the coordinator for {DISCONNECTED_S:g} s"
        if superexec is None:
            superexec = find_descendant(process.pid, SUPEREXEC)
        elif not alive(superexec):
            return f"its {SUPEREXEC} (pid {superexec}) exited, so no message could be handled"
    return f"stopped by {stop.name}"


def _pass_through(process: subprocess.Popen, sink: TextIO, link: Link) -> None:
    """Copy the SuperNode's output to ``sink``, noting what it says of its connection."""
    assert process.stdout is not None
    for line in process.stdout:
        sink.write(line)
        sink.flush()
        if (message := link.read(line)) is not None:
            _say(message)
