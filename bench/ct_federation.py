"""The 3-D tasks end to end: ``fedscan simulate --data synthetic-ct`` as a user runs it, for 3-D
classification (cnn3d) and 3-D segmentation (unet3d), without DP and at ε = 8.

Each run: 3 synthetic CT hospitals × ``--volumes`` series (site 0 also its three broken series),
5 rounds, every other setting at its default, a decode cache of its own (every run assembles its
series once). From its metrics.jsonl: the pooled AUC (classification) or Dice (segmentation) of the
final round, ε per site, and the sites' own seconds per round (the slowest site's
``site-seconds`` per exchange, summed over the rounds and the final evaluation, ÷ rounds); wall
time and the peak resident memory of the whole process tree (CLI, SuperLink, ServerApp, Ray and
its site workers) are measured from outside.

    python bench/ct_federation.py [--volumes 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import simulate  # noqa: E402 - a sibling benchmark script

RUNS = (
    ("classification", "no DP", ["--no-dp"]),
    ("classification", "ε 8", []),
    ("segmentation", "no DP", ["--task", "segmentation", "--no-dp"]),
    ("segmentation", "ε 8", ["--task", "segmentation"]),
)


def _site_seconds(lines: list[dict]) -> float:
    own = sum(max(m.get("site-seconds", 0.0) for m in line["train"].values()) for line in lines)
    own += max(m.get("site-seconds", 0.0) for m in lines[-1]["evaluate"].values())
    return own / len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default="classification,segmentation")
    args = parser.parse_args()
    rows = [
        "| task (model) | privacy | pooled | ε per site | wall s | site s / round | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, privacy, flags in RUNS:
        if task not in args.tasks.split(","):
            continue
        with tempfile.TemporaryDirectory(prefix="fedscan-bench-ct-") as tmp:
            command = ["--data", "synthetic-ct", "--images-per-site", str(args.volumes)]
            command += ["--seed", str(args.seed), *flags]
            wall, peak, lines = simulate(command, Path(tmp))
        pooled = lines[-1]["pooled"]
        figure = (
            f"AUC {pooled['auc']:.3f}" if task == "classification" else f"Dice {pooled['dice']:.3f}"
        )
        epsilon = lines[-1].get("epsilon") or {}
        values = [v for _, v in sorted(epsilon.items()) if v is not None]
        spent = " / ".join(f"{v:.2f}" for v in values) if values else "— (no DP)"
        model = "cnn3d" if task == "classification" else "unet3d"
        rows.append(
            f"| {task} ({model}) | {privacy} | {figure} | {spent} | {wall:.0f} | "
            f"{_site_seconds(lines):.1f} | {peak:.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
