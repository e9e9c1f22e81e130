"""Round latency of a real loopback deployment: wall time per round versus the sites' own work.

Starts a coordinator (`fedscan server start`, TLS + site authentication) and N site processes
(`fedscan client start`) on 127.0.0.1, launches `fedscan run`, and reads metrics.jsonl. Wall time
is from the first train message to the last round's evaluation (`elapsed_s` of the last line),
divided by the rounds. The sites' own time adds, for every exchange, the slowest site's handler
time (`site-seconds`: imports done in the handler, data loading, scoring and training). The rest is
framework overhead: message delivery, polling, ClientApp process starts.

    python bench/deployment.py [--sites 2] [--rounds 4] [--images 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fedscan.common.processes import free_port, stop_process_group, wait_for_port

FEDSCAN = [sys.executable, "-m", "fedscan"]


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run([*FEDSCAN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"fedscan {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def _start(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    with open(cwd / log, "w") as output:
        return subprocess.Popen(
            [*FEDSCAN, *args],
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _prepare(
    root: Path, sites: int, images: int, fleet: int, control: int, *, warm: bool
) -> list[str]:
    _run(
        "synth", "--sites", str(sites), "--out", "sites", "--images-per-site", str(images), cwd=root
    )
    _run("certs", "init", cwd=root)
    _run("certs", "server", "--host", "127.0.0.1", cwd=root)
    (root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\ncontrol-address = '
        f'"127.0.0.1:{control}"\n'
        'state-dir = "coordinator"\n\n[tls]\nca-certificate = "certs/ca.crt"\ncertificate = '
        '"certs/server.crt"\n'
        'private-key = "certs/server.key"\n'
    )
    names = [f"site-{i}" for i in range(sites)]
    for name in names:
        _run("certs", "site", name, "--out", "keys", cwd=root)
        (root / f"{name}.toml").write_text(
            f'[site]\nname = "{name}"\nstate-dir = "{name}-state"\n'
            f"warm-clientapp = {str(warm).lower()}\n\n"
            f'[data]\ndir = "sites/{name}"\n'
            'cache-dir = "cache"\n\n[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = '
            "1000.0\n"
            f'delta = 1e-4\nmin-samples = 10\n\n[coordinator]\naddress = "127.0.0.1:{fleet}"\n'
            f'ca-certificate = "certs/ca.crt"\n\n[auth]\nprivate-key = "keys/{name}.key"\n'
        )
    return names


def _join_sites(root: Path, names: list[str], control: int, processes: list) -> None:
    """Once the coordinator listens: register every site and start it (added to ``processes``)."""
    if not wait_for_port(control):
        raise SystemExit(f"the coordinator did not start; see {root / 'coordinator.log'}")
    for name in names:
        _run(
            "server",
            "sites",
            "add",
            name,
            f"keys/{name}.pub",
            "--config",
            "coordinator.toml",
            cwd=root,
        )
        processes.append(
            _start(["client", "start", "--config", f"{name}.toml"], root, f"{name}.log")
        )


def _totals(run_dir: Path) -> tuple[int, float, float]:
    """(rounds, wall seconds to the final evaluation, the sites' own seconds over every
    exchange)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    own = sum(max(m.get("site-seconds", 0.0) for m in line["train"].values()) for line in lines)
    final_evaluation = lines[-1]["evaluate"].values()  # the others rode on train messages
    own += max(m.get("site-seconds", 0.0) for m in final_evaluation)
    return len(lines), lines[-1]["elapsed_s"], own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument(
        "--fresh-clientapp",
        action="store_true",
        help="sites set warm-clientapp = false: Flower's fresh ClientApp process per message",
    )
    parser.add_argument(
        "--keep", type=Path, help="work here and keep the logs (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            tmp = str(args.keep.resolve())
        root, fleet, control = Path(tmp), free_port(), free_port()
        names = _prepare(
            root, args.sites, args.images, fleet, control, warm=not args.fresh_clientapp
        )
        processes = [
            _start(["server", "start", "--config", "coordinator.toml"], root, "coordinator.log")
        ]
        try:
            _join_sites(root, names, control, processes)
            (root / "run.toml").write_text(
                '[run]\ncoordinator-config = "coordinator.toml"\nrounds = '
                f"{args.rounds}\nmin-sites = {args.sites}\n"
                "local-epochs = 1\nbatch-size = 32\ndelta = 1e-4\ncross-site = "
                "false\njoin-timeout-s = 120\n"
            )
            _run("run", "--config", "run.toml", cwd=root)
            rounds, wall, own = _totals(next((root / "coordinator" / "runs").iterdir()))
        finally:
            for process in reversed(processes):
                stop_process_group(process)
    print(
        f"\n{args.sites} sites × {args.images} synthetic images, small-cnn, DP ε=8, 1 local epoch, "
        f"loopback TLS, {'fresh' if args.fresh_clientapp else 'warm'} ClientApp process\n"
    )
    print(
        "| rounds | wall s | wall s per round | sites' own s per round | overhead s per round | "
        "overhead % |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {rounds} | {wall:.1f} | {wall / rounds:.1f} | {own / rounds:.1f} | "
        f"{(wall - own) / rounds:.1f} | "
        f"{100 * (wall - own) / wall:.0f} % |"
    )


if __name__ == "__main__":
    main()
