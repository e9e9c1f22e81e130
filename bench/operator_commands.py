"""How long each coordinator-operator command takes, as the operator types it.

Starts a loopback coordinator (`fedscan server start`, TLS + site authentication, as
bench/deployment.py does), submits one tiny run (no site joins, so it ends `quorum-not-reached`
after a 5 s join wait: it exists, and has a log), then times each command over `--repeat`
repetitions: `fedscan server sites add` (a fresh key each time), `sites list`, `sites remove`,
`status`, `logs RUN`; and, for comparison, `python -c 'import fedscan.cli.main'` (the CLI's
start-up) and a plain `flwr ls` subprocess (what every command paid per call before the control
API was spoken in-process). Prints a markdown table (median and max seconds) and the load
average before and after. Only loopback is used; everything started is stopped by process group
with bounded waits.

    python bench/operator_commands.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployment import _run, _start  # noqa: E402

from fedscan.common.processes import (  # noqa: E402
    FLOWER_BIN,
    flower_env,
    free_port,
    stop_process_group,
    wait_for_port,
)

_IMPORT = "import fedscan.cli.main"
COMMAND_TIMEOUT_S = 120.0  # one command; a healthy one takes seconds
RUN_TIMEOUT_S = 180  # the tiny run: ServerApp start-up plus its 5 s join wait
FEDSCAN = [str(FLOWER_BIN / "fedscan")]  # the console script the operator types


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # barely moves with the load: close to the wall time on an idle machine


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Timing:
    """Wall and CPU seconds ``command`` took (its own processes, every one waited for); it must
    succeed."""
    cpu, started = _children_cpu(), time.monotonic()
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    took = Timing(time.monotonic() - started, _children_cpu() - cpu)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return took


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _prepare_coordinator(root: Path, fleet: int, control: int) -> None:
    """Certificates and coordinator.toml, as bench/deployment.py writes them (no sites)."""
    _run("certs", "init", cwd=root)
    _run("certs", "server", "--host", "127.0.0.1", cwd=root)
    (root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\ncontrol-address = '
        f'"127.0.0.1:{control}"\nstate-dir = "coordinator"\n\n[tls]\n'
        'ca-certificate = "certs/ca.crt"\ncertificate = "certs/server.crt"\n'
        'private-key = "certs/server.key"\n'
    )


def _submit_tiny_run(root: Path) -> str:
    """One run that starts and ends on its own (no site joins); its fedscan run id."""
    (root / "run.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 1\nmin-sites = 2\n'
        "join-timeout-s = 5\nround-timeout-s = 30\n"
    )
    subprocess.run(  # non-zero by design: quorum-not-reached
        [*FEDSCAN, "run", "--config", "run.toml", "--timeout", str(RUN_TIMEOUT_S)],
        cwd=root,
        capture_output=True,
        timeout=RUN_TIMEOUT_S + 60,
        stdin=subprocess.DEVNULL,
    )
    return next((root / "coordinator" / "runs").iterdir()).name


Command = Callable[[int], list[str]]


def _measure(root: Path, repeat: int, run_id: str) -> dict[str, list[Timing]]:
    """Every command's durations, ``repeat`` times each: fedscan's, then the ``flwr`` calls the
    same commands made before (one subprocess each), for comparison."""
    timings: dict[str, list[Timing]] = {}

    def time_it(label: str, command: Command, cwd: Path = root, env: dict | None = None) -> None:
        timings[label] = [_timed(command(i), cwd, env) for i in range(repeat)]

    keys = [f"bench-{i}" for i in range(repeat)]
    for name in keys:
        _run("certs", "site", name, "--out", "keys", cwd=root)
    config, sites = ["--config", "coordinator.toml"], [*FEDSCAN, "server", "sites"]
    add = "fedscan server sites add"
    time_it(add, lambda i: [*sites, "add", keys[i], f"keys/{keys[i]}.pub", *config])
    time_it("fedscan server sites list", lambda i: [*sites, "list", *config])
    time_it("fedscan server sites remove", lambda i: [*sites, "remove", keys[i], *config])
    time_it("fedscan status", lambda i: [*FEDSCAN, "status", *config])
    time_it("fedscan logs RUN", lambda i: [*FEDSCAN, "logs", run_id, *config])
    time_it("python -c 'import fedscan.cli.main'", lambda i: [sys.executable, "-c", _IMPORT])
    state = root / "coordinator"
    flower_id = json.loads((state / "runs" / run_id / "flower-run.json").read_text())
    flwr = [str(FLOWER_BIN / "flwr")]
    flower_run = str(flower_id["flower_run_id"])
    for label, args in (
        ("flwr ls", ["ls", "fedscan", "--format", "json"]),
        (
            "flwr supernode list (sites list, before)",
            ["supernode", "list", "fedscan", "--format", "json"],
        ),
        ("flwr log --show (logs, before)", ["log", flower_run, "fedscan", "--show"]),
    ):
        time_it(label, lambda i, a=args: [*flwr, *a], state, flower_env(state / "flwr-home"))
    return timings


def _table(timings: dict[str, list[Timing]]) -> str:
    lines = [
        "| command | median s | max s | median CPU s | n |",
        "|---|---|---|---|---|",
    ]
    for label, took in timings.items():
        wall, cpu = [t.wall_s for t in took], [t.cpu_s for t in took]
        lines.append(
            f"| `{label}` | {statistics.median(wall):.2f} | {max(wall):.2f} | "
            f"{statistics.median(cpu):.2f} | {len(took)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-") as tmp:
        root, fleet, control = Path(tmp), free_port(), free_port()
        _prepare_coordinator(root, fleet, control)
        coordinator = _start(
            ["server", "start", "--config", "coordinator.toml"], root, "coordinator.log"
        )
        try:
            if not wait_for_port(control):
                raise SystemExit(f"the coordinator did not start; see {root / 'coordinator.log'}")
            run_id = _submit_tiny_run(root)
            before = os.getloadavg()
            timings = _measure(root, args.repeat, run_id)
            after = os.getloadavg()
        finally:
            stop_process_group(coordinator)
    print(f"\nloopback coordinator, TLS + site authentication; {os.cpu_count()} CPUs\n")
    print(_table(timings))
    print(
        "\nload average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in after)
    )


if __name__ == "__main__":
    main()
