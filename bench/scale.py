"""Simulation scale and framework overhead, through ``fedscan simulate`` (Simulation Engine, as a
user runs it).

* ``scale``: N synthetic sites (16 images each), small-cnn, DP ε = 8, 1 local epoch, 3 rounds: wall
  time per round and the peak resident memory of the whole process tree (CLI, SuperLink, ServerApp,
  Ray).
* ``overhead``: the default demo (3 synthetic sites, the README's defaults): wall time per round
  against the sites' own handler time (``site-seconds``: data, scoring, training), which the
  Simulation Engine runs at most ``cores`` at a time. Overhead = 1 − (sum of site-seconds ÷ parallel
  slots) ÷ wall.

    python bench/scale.py [--sites 10,50,100] [--overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedscan.common.processes import descendants


def tree_rss_mb(pid: int) -> float:
    total = 0
    for member in (pid, *descendants(pid)):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    return total / 1024


def simulate(args: list[str], out: Path) -> tuple[float, float, list[dict]]:
    """(wall s, peak tree RSS MiB, metrics.jsonl lines) of one ``fedscan simulate`` run."""
    env = {**os.environ, "FEDSCAN_CACHE_DIR": str(out / "cache")}
    started, peak = time.monotonic(), 0.0
    process = subprocess.Popen(
        [sys.executable, "-m", "fedscan", "simulate", "--out", str(out / "runs"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        time.sleep(0.5)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"simulate {' '.join(args)} failed: {process.stderr.read()[-500:]}")
    metrics = next((out / "runs").glob("*/metrics.jsonl"))
    return wall, peak, [json.loads(line) for line in metrics.read_text().splitlines()]


def scale_row(sites: int) -> tuple[str, str, str, str]:
    with tempfile.TemporaryDirectory(prefix="fedscan-scale-") as tmp:
        wall, peak, history = simulate(
            [
                "--sites",
                str(sites),
                "--images-per-site",
                "16",
                "--rounds",
                "3",
                "--local-epochs",
                "1",
                "--batch-size",
                "8",
                "--no-cross-site",
                # every site answers within the round on 2 cores (1 000 sites: ≈ 10-20 min)
                "--round-timeout-s",
                str(max(600, 4 * sites)),
            ],
            Path(tmp),
        )
    per_round = (history[-1]["elapsed_s"]) / len(history)
    return (
        "simulation scale",
        f"{sites} sites × 3 rounds",
        f"{per_round:.1f} s/round, peak RSS {peak:,.0f} MiB, wall {wall:.0f} s",
        "completes (100 sites)",
    )


def overhead_row() -> tuple[str, str, str, str]:
    with tempfile.TemporaryDirectory(prefix="fedscan-overhead-") as tmp:
        _, _, history = simulate(["--no-cross-site"], Path(tmp))
    slots = min(os.cpu_count() or 1, 3)
    rounds = history[1:]  # round 1 carries the engine's start-up
    wall = (rounds[-1]["elapsed_s"] - history[0]["elapsed_s"]) / len(rounds)
    work = (
        sum(
            m.get("site-seconds", 0.0)
            for r in rounds
            for phase in ("train", "evaluate")
            for m in r.get(phase, {}).values()
        )
        / len(rounds)
        / slots
    )
    return (
        "framework overhead",
        f"default demo, 3 sites on {slots} slots",
        f"{wall:.1f} s/round wall, "
        f"{work:.1f} s site work per slot: overhead {100 * (1 - work / wall):.0f} %",
        "≤ 10 %",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="10,50,100")
    parser.add_argument(
        "--overhead", action="store_true", help="also measure the default demo's overhead"
    )
    args = parser.parse_args()
    print("| measurement | setting | result | target |\n|---|---|---|---|")
    rows = [scale_row(int(n)) for n in args.sites.split(",") if n] + (
        [overhead_row()] if args.overhead else []
    )
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
