"""Soak: a long simulated run of a tiny model; does the coordinator's memory stay flat?

Runs ``fedscan simulate`` (the Simulation Engine: the ServerApp in its own process, as
in a deployment) for many rounds on 2 small synthetic DICOM sites with DP, then reads
the coordinator's resident memory that every round records in metrics.jsonl
(``coordinator_rss_mb``) and prints a markdown table. Target: growth from round 10
to the last round ≤ 10 %.

    python bench/soak.py [--rounds 200] [--images-per-site 24]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--images-per-site", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedscan-soak-") as tmp:
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "fedscan",
            "simulate",
            "--rounds",
            str(args.rounds),
            "--sites",
            "2",
            "--images-per-site",
            str(args.images_per_site),
            "--local-epochs",
            "1",
            "--batch-size",
            "8",
            "--no-cross-site",
            "--no-cache",
            "--device",
            "cpu",
            "--out",
            tmp,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.monotonic() - started
        if result.returncode != 0:
            sys.exit(f"the soak run failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        metrics = next(Path(tmp).glob("*/metrics.jsonl"))
        history = [json.loads(line) for line in metrics.read_text().splitlines()]
    rss = {line["round"]: line["coordinator_rss_mb"] for line in history}
    checkpoints = [r for r in (1, 10, 50, 100, 150, args.rounds) if r in rss]
    print(
        f"Soak: {args.rounds} rounds, 2 sites × {args.images_per_site} synthetic images, "
        "small-cnn, DP ε = 8; "
        f"wall {wall:.0f} s ({wall / args.rounds:.2f} s per round)\n"
    )
    print("| round | coordinator RSS (MiB) | vs round 10 |")
    print("|---|---|---|")
    for server_round in checkpoints:
        print(
            f"| {server_round} | {rss[server_round]:.1f} | "
            f"{100 * (rss[server_round] / rss[10] - 1):+.1f} % |"
        )
    growth = 100 * (rss[args.rounds] / rss[10] - 1)
    print(
        f"\nGrowth from round 10 to round {args.rounds}: {growth:+.1f} % (target ≤ 10 %): "
        f"{'PASS' if growth <= 10 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
