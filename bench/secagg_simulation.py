"""Secure aggregation in a whole simulated federation: pooled AUC and round time, with and without.

Runs the documented command, ``fedscan simulate``, for each site count and seed twice (plain
FedAvg and ``--secure-aggregation``; DP ε 8, no cross-site: secure aggregation forbids it, so the
plain runs leave it out too; the sites' metrics ``coarse``, exact and simulation-only, so the AUCs
compare models, not metric noise). From each run's ``metrics.jsonl``: the final pooled AUC and the
mean train time of rounds 2 onwards (round 1 also holds each site's first ingestion and noise
calibration); the train time of a secure round includes its three extra exchanges.

    python bench/secagg_simulation.py [--sites 3 10 50] [--seeds 0] [--rounds 3] [--images 40]

Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def simulate(out: Path, sites: int, seed: int, rounds: int, images: int, secure: bool) -> dict:
    """One ``fedscan simulate`` run: its last round's pooled AUC and mean later-round train s."""
    command = [
        *(sys.executable, "-m", "fedscan", "simulate"),
        *("--sites", str(sites), "--images-per-site", str(images), "--rounds", str(rounds)),
        *("--seed", str(seed), "--out", str(out), "--no-cross-site", "--site-metrics", "coarse"),
        *(("--secure-aggregation",) if secure else ()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    (run,) = [path for path in out.iterdir() if path.is_dir()]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = [row["train_s"] for row in rows if row["round"] >= 2 and "train_s" in row]
    return {"auc": rows[-1]["pooled"]["auc"], "round_s": statistics.mean(later)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=40, help="images per simulated site")
    args = parser.parse_args()
    print(
        "| sites | seed | pooled AUC, plain | pooled AUC, secure | round s, plain | round s, "
        "secure | secure − plain |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for sites in args.sites:
            for seed in args.seeds:
                plain, secure = (
                    simulate(
                        Path(tmp) / f"{sites}-{seed}-{arm}",
                        sites,
                        seed,
                        args.rounds,
                        args.images,
                        arm == "secure",
                    )
                    for arm in ("plain", "secure")
                )
                print(
                    f"| {sites} | {seed} | {plain['auc']:.3f} | {secure['auc']:.3f} | "
                    f"{plain['round_s']:.1f} | {secure['round_s']:.1f} | "
                    f"{secure['round_s'] - plain['round_s']:+.1f} s |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
