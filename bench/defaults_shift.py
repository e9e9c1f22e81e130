"""Compare training settings in-distribution and under shift, on synthetic DICOM sites.

Trains FedAvg + DP-SGD in-process (the same local training, accounting and
example-weighted averaging as a fedscan run, without Flower's transport) on
sites 0-2 and reports validation AUC on those sites, on three unseen
scanners (sites 3-5, other profiles and seed), and on the in-distribution
validation images with contrast reduced and brightness raised.

    .venv/bin/python bench/defaults_shift.py --seeds 0 1

Prints one markdown table. Not part of the tests.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.data.site import load_site
from fedscan.common.data.synth import SynthConfig, generate_site
from fedscan.common.defaults import AUGMENT_DEVICE, AUGMENT_PLACES
from fedscan.common.metrics.classification import evaluate_model
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.privacy import calibrate_noise, sample_rate, steps_per_epoch
from fedscan.common.training_settings import TrainSettings

CPU = torch.device("cpu")


def federate(
    sites: list[SiteData],
    settings: TrainSettings,
    *,
    rounds: int,
    epsilon: float,
    delta: float,
    seed: int,
    augment_on: str = AUGMENT_DEVICE,
) -> torch.nn.Module:
    """FedAvg over ``sites``, each site's noise calibrated once for the whole run (as a real site
    does)."""
    model = build_model(settings.model, seed=seed)
    rates = [sample_rate(len(s.train), settings.batch_size) for s in sites]
    sigmas = [
        calibrate_noise(
            target_epsilon=epsilon,
            delta=delta,
            sample_rate=q,
            total_steps=rounds
            * settings.local_epochs
            * steps_per_epoch(len(s.train), settings.batch_size),
        )
        for s, q in zip(sites, rates, strict=True)
    ]
    for _ in range(rounds):
        states, weights = [], []
        for index, site in enumerate(sites):
            local = build_model(settings.model)
            local.load_state_dict(model.state_dict())
            dp = DpStep(sigmas[index], 1.0)
            placed = replace(settings, augment_on=augment_on)
            train_local(local, site.train, placed, device=CPU, dp=dp)
            states.append(local.state_dict())
            weights.append(len(site.train))
        model.load_state_dict(
            {
                key: sum(w * s[key] for w, s in zip(weights, states, strict=True)) / sum(weights)
                for key in states[0]
            }
        )
    return model


def contrast_shifted(data: ImageSet) -> ImageSet:
    return ImageSet((0.5 + (data.images - 0.5) * 0.7 + 0.1).clamp(0, 1), data.labels)


def _auc(model: nn.Module, sets: list[ImageSet]) -> float:
    """Mean validation AUC of ``model`` over ``sets``."""
    return float(np.mean([evaluate_model(model, s, device=CPU)["auc"] for s in sets]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["0.02:32", "0.05:64"],
        help="LR:BATCH pairs to compare (3 local epochs each)",
    )
    parser.add_argument(
        "--augment-on",
        nargs="+",
        default=[AUGMENT_DEVICE],
        choices=AUGMENT_PLACES,
        help="where augmentation runs: batched on the device (the default) or per image in the "
        "loader (MONAI); several compare them on the same seeds",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config, unseen_config = SynthConfig(3, 300, 0), SynthConfig(6, 200, 11)
        train_sites = [load_site(_site(tmp, i, config), size=64) for i in range(3)]
        unseen = [
            load_site(_site(tmp, i, unseen_config), size=64, val_fraction=0.5) for i in (3, 4, 5)
        ]
        print(
            "| lr | batch | augmentation | seed | AUC in-distribution | AUC unseen scanners (mean) "
            "| AUC contrast shift |"
        )
        print("|---|---|---|---|---|---|---|")
        for pair, place in [(p, a) for p in args.settings for a in args.augment_on]:
            lr, batch = float(pair.split(":")[0]), int(pair.split(":")[1])
            for seed in args.seeds:
                settings = TrainSettings(
                    learning_rate=lr, batch_size=batch, local_epochs=3, seed=seed
                )
                model = federate(
                    train_sites,
                    settings,
                    rounds=args.rounds,
                    epsilon=args.epsilon,
                    delta=1e-5,
                    seed=seed,
                    augment_on=place,
                )
                home = _auc(model, [s.val for s in train_sites])
                print(
                    f"| {lr} | {batch} | {place} | {seed} | {home:.3f} | "
                    f"{_auc(model, [s.val for s in unseen]):.3f} | "
                    f"{_auc(model, [contrast_shifted(s.val) for s in train_sites]):.3f} |",
                    flush=True,
                )


def _site(tmp: str, index: int, config: SynthConfig) -> Path:
    folder = Path(tmp) / f"seed{config.seed}" / f"site-{index}"
    generate_site(folder, index, config)
    return folder


if __name__ == "__main__":
    main()
