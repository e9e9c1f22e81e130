"""Validation AUC on PneumoniaMNIST: centralised vs federated, without and with DP (seed mean ±
std).

Federated rows: in-process federations (``bench/npz_federation.py``) of 3 sites partitioned
Dirichlet(0.5) on labels, the README's default settings (model, learning rate, local epochs, batch,
clipping, rounds) unless ``--rounds`` is given; pooled validation AUC over the sites' validation
shards, which together are the whole validation split. Centralised: the same model and settings
trained on the pooled training split for rounds × local epochs epochs, no DP, scored on the whole
validation split. Seeds change the partition, the initial model and the shuffling.

    python bench/accuracy.py [--npz ../shared/data/pneumoniamnist_trainval.npz] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from npz_federation import npz_federation  # bench/ is on sys.path when a bench script runs

from fedscan.common import defaults
from fedscan.common.config import RunConfig
from fedscan.common.data.npz import load_npz_shard
from fedscan.common.metrics.classification import evaluate_model
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.training import train_local
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.inprocess import flower_identity

SETTINGS = (
    ("centralised, no DP", None),
    ("federated, no DP", math.inf),
    ("federated, DP ε = 8", 8.0),
    ("federated, DP ε = 3", 3.0),
)
TARGETS = {"federated, no DP": 0.97, "federated, DP ε = 8": 0.96, "federated, DP ε = 3": 0.94}


def centralised_auc(npz: Path, seed: int, rounds: int) -> float:
    settings = TrainSettings(seed=seed)
    data = load_npz_shard(
        npz,
        site=0,
        sites=1,
        partition="iid",
        seed=seed,
        size=get_model_spec(settings.model).input_size,
    )
    model = build_model(settings.model, seed=seed)
    train_local(
        model,
        data.train,
        replace(settings, local_epochs=rounds * settings.local_epochs),
        dp=None,
        device=torch.device("cpu"),
    )
    return float(evaluate_model(model, data.val, device=torch.device("cpu"))["auc"])


def federated_auc(npz: Path, root: Path, seed: int, rounds: int, epsilon: float) -> float:
    privacy = (
        PrivacyConfig(enabled=False)
        if math.isinf(epsilon)
        else PrivacyConfig(epsilon=epsilon, delta=1e-5)
    )
    config = RunConfig(rounds=rounds, min_sites=3, cross_site=False, seed=seed, privacy=privacy)
    result = npz_federation(npz, root, config, sites=3, partition="dirichlet:0.5", seed=seed)
    return float(result.history[-1]["pooled"]["auc"])


def measure(npz: Path, seeds: list[int], rounds: int) -> Iterator[tuple[str, list[float]]]:
    """(setting, AUC per seed) for every row, as each is measured."""
    with flower_identity(), tempfile.TemporaryDirectory(prefix="fedscan-accuracy-") as tmp:
        for label, epsilon in SETTINGS:
            yield (
                label,
                [
                    centralised_auc(npz, seed, rounds)
                    if epsilon is None
                    else federated_auc(npz, Path(tmp) / f"{label}-{seed}", seed, rounds, epsilon)
                    for seed in seeds
                ],
            )


def describe(aucs: list[float]) -> str:
    spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    return f"{statistics.mean(aucs):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=defaults.ROUNDS)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"\nPneumoniaMNIST validation AUC, {len(seeds)} seeds, {args.rounds} rounds, defaults "
        "otherwise\n"
    )
    print("| setting | AUC (mean ± std) | per seed | target |")
    print("|---|---|---|---|")
    for label, aucs in measure(args.npz.resolve(), seeds, args.rounds):
        target = f"≥ {TARGETS[label]}" if label in TARGETS else "—"
        print(
            f"| {label} | {describe(aucs)} | {', '.join(f'{a:.3f}' for a in aucs)} | {target} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
