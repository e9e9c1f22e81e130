"""Round latency of a real loopback deployment: wall time per round versus the sites' own work.

Starts a coordinator (`fedscan server start`, TLS + site authentication) and N site processes
(`fedscan client start`) on 127.0.0.1, waits until each site's warm executor has imported its
stack, launches `fedscan run`, and reads metrics.jsonl and events.jsonl. Wall time is from the
first train message sent to the final evaluation received, divided by the rounds. The sites' own
time adds, for every exchange, the slowest site's handler time (`site-seconds`: data loading,
noise calibration, scoring and training). The rest is framework overhead: message delivery,
polling, ClientApp process starts, a site's bookkeeping after training, the coordinator's
aggregation; the table splits it into what the train exchanges add to the sites' work and what
lies between them.

    python bench/deployment.py [--sites 2] [--rounds 4] [--images 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedscan.common.processes import free_port, stop_process_group, wait_for_port

FEDSCAN = [sys.executable, "-m", "fedscan"]
WARM_LINE = "ClientApp stack imported once"  # client/warm_exec.py, once its imports are done


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


def _wait_until_warm(root: Path, names: list[str], timeout_s: float = 300) -> None:
    """Until every site's warm executor has imported its stack, as at a site started before the
    run (a message arriving earlier waits for the import: ≈ 7 s once, on a slow 2-core host)."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while WARM_LINE not in (root / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}'s executor did not start; see {root / f'{name}.log'}")
            time.sleep(0.5)


def _totals(run_dir: Path) -> dict[str, float]:
    """Seconds over the run: ``wall`` (the first train message sent to the final evaluation
    received: not the wait for sites to connect), ``own`` (the slowest site's
    handler time, every exchange), ``exchanges`` (the train exchanges, send to the last reply) and
    ``own_in_exchanges`` (the part of ``own`` spent in them); and the ``rounds``."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    first_sent = next(e["time"] for e in events if e["event"] == "round-training")
    evaluated = next(e["time"] for e in events if e["event"] == "final-evaluated")
    per_exchange = [max(m.get("site-seconds", 0.0) for m in x["train"].values()) for x in lines]
    final_evaluation = lines[-1]["evaluate"].values()  # the others rode on train messages
    own = sum(per_exchange) + max(m.get("site-seconds", 0.0) for m in final_evaluation)
    return {
        "rounds": len(lines),
        "wall": evaluated - first_sent,
        "own": own,
        "exchanges": sum(x["train_s"] for x in lines),
        "own_in_exchanges": sum(per_exchange),
    }


def _table(totals: dict[str, float]) -> None:
    """Per round: wall, the sites' own, and the overhead split into what the train exchanges
    add to the slowest site's work (delivery, process start, the site's bookkeeping after
    training) and the rest (the coordinator between exchanges, the final evaluation's delivery)."""
    rounds, wall, own = totals["rounds"], totals["wall"], totals["own"]
    in_exchanges = totals["exchanges"] - totals["own_in_exchanges"]
    rest = wall - own - in_exchanges
    print(
        "| rounds | wall s | wall s per round | sites' own s per round | overhead s per round "
        "| of it: in train exchanges | of it: between them | overhead % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {rounds} | {wall:.1f} | {wall / rounds:.1f} | {own / rounds:.1f} | "
        f"{(wall - own) / rounds:.1f} | {in_exchanges / rounds:.1f} | {rest / rounds:.1f} | "
        f"{100 * (wall - own) / wall:.0f} % |"
    )


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
            if not args.fresh_clientapp:
                _wait_until_warm(root, names)
            (root / "run.toml").write_text(
                '[run]\ncoordinator-config = "coordinator.toml"\nrounds = '
                f"{args.rounds}\nmin-sites = {args.sites}\n"
                "local-epochs = 1\nbatch-size = 32\ndelta = 1e-4\ncross-site = "
                "false\njoin-timeout-s = 120\n"
            )
            _run("run", "--config", "run.toml", cwd=root)
            totals = _totals(next((root / "coordinator" / "runs").iterdir()))
        finally:
            for process in reversed(processes):
                stop_process_group(process)
    print(
        f"\n{args.sites} sites × {args.images} synthetic images, small-cnn, DP ε=8, 1 local epoch, "
        f"loopback TLS, {'fresh' if args.fresh_clientapp else 'warm'} ClientApp process\n"
    )
    _table(totals)


if __name__ == "__main__":
    main()
