"""Federated segmentation on the synthetic sites: pooled Dice without DP and at ε = 8 and 3, and
wall time.

Each row is one real ``fedscan simulate --task segmentation`` (3 default synthetic hospitals, 300
images each, their finding masks; the task's defaults, 5 rounds, unless the row says otherwise)
timed from the command's start to its end. The final model is then scored with ``fedscan
evaluate``'s code on three hospitals the federation never saw (other scanner profiles: bit depth,
contrast, noise, photometric interpretation): the shift column.

    python bench/segmentation.py [--settings "no DP,ε 8,ε 8 10 rounds"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {  # the task's defaults (5 rounds), and 10 rounds beside each
    "no DP": ["--no-dp"],
    "no DP 10 rounds": ["--no-dp", "--rounds", "10"],
    "ε 8": [],
    "ε 8 10 rounds": ["--rounds", "10"],
    "ε 3": ["--epsilon", "3"],
    "ε 3 10 rounds": ["--epsilon", "3", "--rounds", "10"],
}
UNSEEN = (3, 4, 5)  # site indices past the federation's three: random scanner profiles


def _simulate(out: Path, extra: list[str]) -> tuple[dict, float, Path]:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedscan",
            "simulate",
            "--task",
            "segmentation",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(
            f"simulate {' '.join(extra)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    run_dir = max(out.iterdir(), key=lambda path: path.stat().st_mtime)
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return final, wall, run_dir / "final.pt"


def _unseen_dice(checkpoint: Path, sites: list[Path]) -> float:
    from fedscan.client.local_evaluation import evaluate_checkpoint

    return statistics.mean(
        evaluate_checkpoint(checkpoint, f"dicom:{site}", split="val", device="cpu")["dice"]
        for site in sites
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS"
    )
    args = parser.parse_args()
    from fedscan.common.data.synth import SynthConfig, generate_site

    with tempfile.TemporaryDirectory() as tmp:
        unseen = [Path(tmp) / f"unseen-{index}" for index in UNSEEN]
        for index, folder in zip(UNSEEN, unseen, strict=True):
            generate_site(folder, index, SynthConfig(sites=6, images_per_site=150, seed=0))
        print(
            "| setting | pooled Dice | pooled IoU | mean site HD95 (px) | Dice, 3 unseen scanners "
            "| ε per site "
            "| wall s |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in args.settings.split(","):
            final, wall, checkpoint = _simulate(Path(tmp) / "runs", SETTINGS[name])
            pooled, sites = final["pooled"], final["evaluate"].values()
            hd95 = statistics.mean(site["hd95"] for site in sites)
            spent = max(
                (value for value in final["epsilon"].values() if value is not None), default=None
            )
            print(
                f"| {name} | {pooled['dice']:.3f} | {pooled['iou']:.3f} | {hd95:.2f} | "
                f"{_unseen_dice(checkpoint, unseen):.3f} | "
                f"{'∞' if spent is None else f'{spent:.2f}'} | "
                f"{wall:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
