"""How long each coordinator-operator and site command takes, as the operator types it.

Starts a loopback coordinator (`fedscan server start`, TLS + site authentication, as
bench/deployment.py does), submits one tiny run (no site joins, so it ends `quorum-not-reached`
after a 5 s join wait: it exists, and has a log) and times, from `fedscan run`'s start, its first
printed line and its first progress event (the "waiting for sites" line). Then times each command
over `--repeat` repetitions: `fedscan server sites add` (a fresh key each time), `sites list`,
`sites remove`, `status`, `logs RUN`, `client check` (a registered 60-image synthetic site: every
check, the data load and the registration question included); and, for comparison,
`python -c 'import fedscan.cli.main'` (the CLI's start-up) and the plain `flwr` subprocesses that
every command paid per call before the control API was spoken in-process. Prints a markdown table
(median and max seconds) and the load average before and after. `--fedscan PATH` times another
installation's console script (e.g. an older checkout's venv: the "before" column); the `flwr`
rows are then left out. Only loopback is used; everything started is stopped by process group
with bounded waits.

    python bench/operator_commands.py [--repeat 3] [--fedscan /other/venv/bin/fedscan]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedscan.common.processes import (
    FLOWER_BIN,
    flower_env,
    free_port,
    stop_process_group,
    wait_for_port,
)

_IMPORT = "import fedscan.cli.main"
COMMAND_TIMEOUT_S = 120.0  # one command; a healthy one takes seconds
RUN_TIMEOUT_S = 180  # the tiny run: ServerApp start-up plus its 5 s join wait
FIRST_EVENT = re.compile(r"waiting for (\d+ of \d+ )?sites")
SITE_IMAGES = 60  # a pilot-sized site: `client check` loads and checks every image


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # barely moves with the load: close to the wall time on an idle machine


@dataclass(frozen=True)
class Bench:
    root: Path
    fedscan: list[str]  # the console script timed, as the operator types it

    def run(self, *args: str) -> None:
        """A set-up step; it must succeed."""
        result = subprocess.run(
            [*self.fedscan, *args], cwd=self.root, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise SystemExit(f"fedscan {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.root / log, "w") as output:
            return subprocess.Popen(
                [*self.fedscan, *args],
                cwd=self.root,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )


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


def _prepare(bench: Bench, fleet: int, control: int) -> None:
    """Certificates, coordinator.toml and one synthetic site, as bench/deployment.py writes them."""
    bench.run("certs", "init")
    bench.run("certs", "server", "--host", "127.0.0.1")
    (bench.root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\ncontrol-address = '
        f'"127.0.0.1:{control}"\nstate-dir = "coordinator"\n\n[tls]\n'
        'ca-certificate = "certs/ca.crt"\ncertificate = "certs/server.crt"\n'
        'private-key = "certs/server.key"\n'
    )
    bench.run("synth", "--sites", "1", "--out", "sites", "--images-per-site", str(SITE_IMAGES))
    bench.run("certs", "site", "site-0", "--out", "keys")
    (bench.root / "site-0.toml").write_text(
        '[site]\nname = "site-0"\nstate-dir = "site-0-state"\n\n[data]\ndir = "sites/site-0"\n'
        'cache-dir = "cache"\n\n[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = '
        f'40.0\nmin-samples = 10\n\n[coordinator]\naddress = "127.0.0.1:{fleet}"\n'
        'ca-certificate = "certs/ca.crt"\n\n[auth]\nprivate-key = "keys/site-0.key"\n'
    )


def _first_lines(bench: Bench) -> tuple[str, dict[str, float]]:
    """Submit one run that ends on its own (no site joins); its fedscan run id and the seconds
    from `fedscan run`'s start to its first printed line and to its first progress event."""
    (bench.root / "run.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 1\nmin-sites = 2\n'
        "join-timeout-s = 5\nround-timeout-s = 30\n"
    )
    started, seen = time.monotonic(), {}
    follower = subprocess.Popen(  # non-zero by design: quorum-not-reached
        [*bench.fedscan, "run", "--config", "run.toml", "--timeout", str(RUN_TIMEOUT_S)],
        cwd=bench.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert follower.stdout is not None
        for line in follower.stdout:  # ends when the run ends: it has a --timeout of its own
            now = time.monotonic() - started
            seen.setdefault("first line", now)
            if FIRST_EVENT.search(line):
                seen.setdefault("first progress event", now)
    finally:
        stop_process_group(follower)
    return next((bench.root / "coordinator" / "runs").iterdir()).name, seen


Command = Callable[[int], list[str]]


def _measure(bench: Bench, repeat: int, run_id: str, flwr_rows: bool) -> dict[str, list[Timing]]:
    """Every command's durations, ``repeat`` times each: fedscan's, then (``flwr_rows``) the
    ``flwr`` calls the same commands made before (one subprocess each), for comparison."""
    timings: dict[str, list[Timing]] = {}
    root, fedscan = bench.root, bench.fedscan

    def time_it(label: str, command: Command, cwd: Path = root, env: dict | None = None) -> None:
        timings[label] = [_timed(command(i), cwd, env) for i in range(repeat)]

    keys = [f"bench-{i}" for i in range(repeat)]
    for name in keys:
        bench.run("certs", "site", name, "--out", "keys")
    config, sites = ["--config", "coordinator.toml"], [*fedscan, "server", "sites"]
    add = "fedscan server sites add"
    time_it(add, lambda i: [*sites, "add", keys[i], f"keys/{keys[i]}.pub", *config])
    time_it("fedscan server sites list", lambda i: [*sites, "list", *config])
    time_it("fedscan server sites remove", lambda i: [*sites, "remove", keys[i], *config])
    time_it("fedscan status", lambda i: [*fedscan, "status", *config])
    time_it("fedscan logs RUN", lambda i: [*fedscan, "logs", run_id, *config])
    bench.run("server", "sites", "add", "site-0", "keys/site-0.pub", *config)
    check = "fedscan client check (60 images)"
    time_it(check, lambda i: [*fedscan, "client", "check", "--config", "site-0.toml"])
    python = str(Path(fedscan[0]).parent / "python")
    time_it("python -c 'import fedscan.cli.main'", lambda i: [python, "-c", _IMPORT])
    if flwr_rows:
        _flwr_rows(root / "coordinator", run_id, time_it)
    return timings


def _flwr_rows(state: Path, run_id: str, time_it: Callable) -> None:
    flower_id = json.loads((state / "runs" / run_id / "flower-run.json").read_text())
    flwr, flower_run = [str(FLOWER_BIN / "flwr")], str(flower_id["flower_run_id"])
    for label, args in (
        ("flwr ls", ["ls", "fedscan", "--format", "json"]),
        (
            "flwr supernode list (sites list, before)",
            ["supernode", "list", "fedscan", "--format", "json"],
        ),
        ("flwr log --show (logs, before)", ["log", flower_run, "fedscan", "--show"]),
    ):
        time_it(label, lambda i, a=args: [*flwr, *a], state, flower_env(state / "flwr-home"))


def _table(timings: dict[str, list[Timing]], first: dict[str, float]) -> str:
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
    for label in ("first line", "first progress event"):
        took_s = f"{first[label]:.2f}" if label in first else "never"
        lines.append(f"| `fedscan run` to its {label} | {took_s} | | | 1 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fedscan", type=Path, default=FLOWER_BIN / "fedscan")
    args = parser.parse_args()
    ours = args.fedscan.resolve() == (FLOWER_BIN / "fedscan").resolve()
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-") as tmp:
        bench, fleet, control = Bench(Path(tmp), [str(args.fedscan)]), free_port(), free_port()
        _prepare(bench, fleet, control)
        coordinator = bench.start(["server", "start", "--config", "coordinator.toml"], "coord.log")
        try:
            if not wait_for_port(control):
                raise SystemExit(f"the coordinator did not start; see {bench.root / 'coord.log'}")
            run_id, first = _first_lines(bench)
            before = os.getloadavg()
            timings = _measure(bench, args.repeat, run_id, flwr_rows=ours)
            after = os.getloadavg()
        finally:
            stop_process_group(coordinator)
    print(f"\n{args.fedscan}: loopback coordinator, TLS + site authentication")
    print(f"{os.cpu_count()} CPUs\n")
    print(_table(timings, first))
    load = [", ".join(f"{x:.2f}" for x in sample) for sample in (before, after)]
    print(f"\nload average (1, 5, 15 min) before: {load[0]}; after: {load[1]}")


if __name__ == "__main__":
    main()
