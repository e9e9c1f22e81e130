"""``fedscan client start``: a hospital joins the federation as a Flower SuperNode.

The SuperNode dials out to the coordinator's Fleet port (the only network
path a hospital opens: outbound gRPC over TLS), authenticates with the site's
key, and runs fedscan's ClientApp for every message with the site's own
configuration (``--node-config site-config=...``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

from fedscan.cli.processes import forward_stop_signals, stop_process_group
from fedscan.cli.superlink import flower_env, free_port
from fedscan.cli.supernode_launcher import DEFAULT_POLL_S, POLL_ENV
from fedscan.common.site_config import SiteConfig

_FLOWER_EXIT = re.compile(r"Exit Code: (\d+)")
# Flower's SuperNode exit codes worth translating (flower.ai/docs/framework/ref-exit-codes).
EXIT_ADVICE = {
    305: "The coordinator refused this site's key: send NAME.pub to the coordinator operator, who runs "
         "`fedscan server sites add NAME NAME.pub`; then start again.",
}


def supernode_command(config: SiteConfig, config_path: Path) -> list[str]:
    """The ``flower-supernode`` command line for this site."""
    connection = config.connection
    assert connection is not None, "pre-flight checks ensure a [coordinator] section"
    command = [sys.executable, "-m", "fedscan.cli.supernode_launcher", "--superlink", connection.address,
               "--node-config", f'site-config="{Path(config_path).resolve()}"',
               "--host", "127.0.0.1", "--port", str(free_port()), "--max-retries", "20", "--max-wait-time", "600"]
    if connection.insecure:
        return command + ["--insecure"]
    command += ["--root-certificates", str(connection.ca_certificate)]
    return command + (["--auth-supernode-private-key", str(connection.private_key)] if connection.private_key else [])


def run_supernode(config: SiteConfig, config_path: Path) -> tuple[int, str]:
    """Run the SuperNode until it exits or this process is stopped; its exit code and advice.

    Its output is passed through (to ``[logging] log-dir/supernode.log`` when set) and read for Flower's
    exit code, which the SuperNode prints but does not always exit with.
    """
    home = config.state_dir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    sink: TextIO = sys.stdout
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        sink = open(config.log_dir / "supernode.log", "a", encoding="utf-8")
    env = {**flower_env(home), POLL_ENV: str(config.connection.poll_interval_s if config.connection else DEFAULT_POLL_S)}
    process = subprocess.Popen(supernode_command(config, config_path), env=env, cwd=config.state_dir,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", start_new_session=True)
    forward_stop_signals(process)
    codes: list[int] = []
    # Read on a thread: the SuperNode's helpers inherit its output, so EOF only comes once they are gone.
    reader = threading.Thread(target=_pass_through, args=(process, sink, codes), daemon=True)
    reader.start()
    try:
        code = process.wait()
    finally:
        stop_process_group(process)
        reader.join(timeout=10)
        if sink is not sys.stdout:
            sink.close()
    return code, EXIT_ADVICE.get(codes[-1] if codes else code, "")


def _pass_through(process: subprocess.Popen, sink: TextIO, codes: list[int]) -> None:
    """Copy the SuperNode's output to ``sink``, noting every Flower exit code it prints."""
    assert process.stdout is not None
    for line in process.stdout:
        sink.write(line)
        sink.flush()
        if (found := _FLOWER_EXIT.search(line)) is not None:
            codes.append(int(found.group(1)))
