"""A hospital joins the federation as a Flower SuperNode (``fedscan client start``).

The SuperNode dials out to the coordinator's Fleet port (the only network
path a hospital opens: outbound gRPC over TLS), authenticates with the site's
key, and runs fedscan's ClientApp for every message with the site's own
configuration (``--node-config site-config=...``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from fedscan.client.site import SITE_CONFIG_KEY
from fedscan.client.site_config import Connection, SiteConfig
from fedscan.client.supernode_launcher import POLL_ENV
from fedscan.common.errors import ConfigError
from fedscan.common.processes import flower_env, forward_stop_signals, free_port, stop_process_group

log = logging.getLogger(__name__)

RUNNING_MARKER = (
    "supernode.running"  # present while a SuperNode runs; left behind by an unclean stop
)
# Flower marks a silent SuperNode offline after 2 missed 30 s heartbeats; until then it refuses a
# new one.
STILL_ONLINE_S = 2 * 30 + 20
RETRY_S = 2.0
MARKER_TOUCH_S = 5.0
_FLOWER_EXIT = re.compile(r"Exit Code: (\d+)")
# Flower's SuperNode exit codes worth translating (flower.ai/docs/framework/ref-exit-codes).
# 305 is also Flower's answer to a site it still lists as online: run_supernode retries that case
# after an unclean stop.
EXIT_ADVICE = {
    305: (
        "The coordinator refused this site's key: send NAME.pub to the coordinator operator, who "
        "runs `fedscan server sites add NAME NAME.pub`; then start again."
    ),
}


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


def run_supernode(config: SiteConfig, config_path: Path) -> tuple[int, str]:
    """Run the SuperNode until it exits or this process is stopped; its exit code and advice.

    After this site's previous SuperNode died without signing off (killed, power cut), the
    coordinator lists it as online until its heartbeats are missed, and refuses to activate it again
    meanwhile: that refusal is retried until the coordinator lets go, instead of failing the
    restart.
    """
    marker = config.state_dir / RUNNING_MARKER
    last_alive = (
        marker.stat().st_mtime if marker.is_file() else None
    )  # the previous process died unclean
    while True:
        code, printed = _supernode_once(config, config_path, marker)
        flower_code = printed[-1] if printed else code
        if flower_code != 305 or last_alive is None or time.time() - last_alive > STILL_ONLINE_S:
            break
        print(
            "The coordinator still lists this site as online after an unclean stop; retrying in "
            f"{RETRY_S:g} s.",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(RETRY_S)
    marker.unlink(missing_ok=True)
    return code, EXIT_ADVICE.get(flower_code, "")


def _keep_touching(marker: Path, process: subprocess.Popen) -> None:
    """Refresh the marker's time while the SuperNode runs: how recently it was alive, after a
    crash."""
    while process.poll() is None:
        marker.touch()
        time.sleep(MARKER_TOUCH_S)


def _supernode_once(config: SiteConfig, config_path: Path, marker: Path) -> tuple[int, list[int]]:
    """One SuperNode process: its exit code and the Flower exit codes it printed.

    Its output is passed through (to ``[logging] log-dir/supernode.log`` when set) and read for
    Flower's exit code, which the SuperNode prints but does not always exit with.
    """
    home = config.state_dir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    sink: TextIO = sys.stdout
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        sink = open(config.log_dir / "supernode.log", "a", encoding="utf-8")
    env = {**flower_env(home), POLL_ENV: str(_connection(config).poll_interval_s)}
    process = subprocess.Popen(
        supernode_command(config, config_path),
        env=env,
        cwd=config.state_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    forward_stop_signals(process)
    codes: list[int] = []
    # Read on a thread: the SuperNode's helpers inherit its output, so EOF only comes once they are
    # gone.
    reader = threading.Thread(target=_pass_through, args=(process, sink, codes), daemon=True)
    reader.start()
    threading.Thread(target=_keep_touching, args=(marker, process), daemon=True).start()
    try:
        code = process.wait()
    finally:
        stop_process_group(process)
        reader.join(timeout=10)
        if sink is not sys.stdout:
            sink.close()
    return code, codes


def _pass_through(process: subprocess.Popen, sink: TextIO, codes: list[int]) -> None:
    """Copy the SuperNode's output to ``sink``, noting every Flower exit code it prints."""
    assert process.stdout is not None
    for line in process.stdout:
        sink.write(line)
        sink.flush()
        if (found := _FLOWER_EXIT.search(line)) is not None:
            codes.append(int(found.group(1)))
