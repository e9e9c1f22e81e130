"""``make bench``: every benchmark of issue 8 in one run on this machine, as one markdown table.

Rows: DP-SGD step ÷ plain step for each model and Opacus per-sample-gradient mode (``dp_step.py``);
the default demo's framework overhead and simulation scale at 10, 50 and 100 sites (``scale.py``);
validation AUC centralised and federated, without DP and at ε = 8 and 3, seed mean ± std
(``accuracy.py``). Each script also runs on its own with more options.

    python bench/all.py [--npz ../shared/data/pneumoniamnist_trainval.npz] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import accuracy
import dp_step
import scale
import torch

from fedscan.common import defaults
from fedscan.common.models.registry import MODELS


def _print(row: tuple[str, ...]) -> None:
    print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, small-cnn only, 10 and 50 sites"
    )
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.monotonic()
    print(f"\nfedscan benchmarks — torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| measurement | setting | result | target |\n|---|---|---|---|")
    for name in (defaults.MODEL,) if args.quick else tuple(MODELS):
        plain_ms, cells = dp_step.measure_model(
            name, batch=32, warmup=2, steps=5 if name != defaults.MODEL else 10
        )
        for mode, ratio in cells.items():
            target = "≤ 1.5× (stretch 1.3×)" if name == defaults.MODEL else "—"
            _print(
                ("DP step ÷ plain step", f"{name} ({plain_ms:.0f} ms plain), {mode}", ratio, target)
            )
    _print(scale.overhead_row())
    for sites in (10, 50) if args.quick else (10, 50, 100):
        _print(scale.scale_row(sites))
    seeds = [0] if args.quick else [0, 1, 2]
    for label, aucs in accuracy.measure(args.npz.resolve(), seeds, defaults.ROUNDS):
        target = f"≥ {accuracy.TARGETS[label]}" if label in accuracy.TARGETS else "—"
        _print(("validation AUC, 3 sites Dirichlet(0.5)", label, accuracy.describe(aucs), target))
    print(f"\nAll rows measured in one run, {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
