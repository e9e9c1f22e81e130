"""Public pretraining, honestly measured: federate with DP from scratch, from weights pretrained on
public data (all parameters trained), and from them training the head only.

"Public" here is a synthetic scanner profile no private site holds (site 5 of another generator
seed), trained centrally without DP; the private federation is sites 0-2 (FedAvg + DP-SGD, each
site's noise calibrated once for the run, in-process as ``bench/defaults_shift.py`` does). Each
arm is scored on the private sites' validation images (in-distribution) and on two unseen
scanners (sites 3-4 of a third seed: shift). The head-only arm freezes every other parameter at
the sites (``fedscan.common.models.trainable``), as ``trainable = "head"`` does in a run; its
site-seconds per round are shown against full training's.

    .venv/bin/python bench/transfer.py [--seeds 0 1 2] [--epsilons 3 8] [--rounds 5]

Prints one markdown table. Only weights this script trains are loaded; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import torch
from defaults_shift import _auc, _site  # bench/ is on sys.path when a bench script runs

from fedscan.common.data.imageset import SiteData
from fedscan.common.data.site import load_site
from fedscan.common.data.synth import SynthConfig
from fedscan.common.models.networks import build_model
from fedscan.common.models.trainable import freeze_all_but, trained_names
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.privacy import calibrate_noise, sample_rate, steps_per_epoch
from fedscan.common.training_settings import TrainSettings

CPU = torch.device("cpu")
ARMS = ("from scratch", "warm, full", "warm, head only")


def pretrained(public: SiteData, settings: TrainSettings, epochs: int) -> dict:
    """Central training without DP on the public site: the starting weights."""
    model = build_model(settings.model, seed=settings.seed)
    train_local(model, public.train, replace(settings, local_epochs=epochs), dp=None, device=CPU)
    return model.state_dict()


def federate(
    sites: list[SiteData], settings: TrainSettings, start: dict | None, *, rounds: int, eps: float
) -> tuple[torch.nn.Module, float]:
    """FedAvg + DP-SGD over ``sites`` from ``start`` (None: the seed's weights); settings'
    ``trainable`` parameters only. The model and the mean site-seconds of a round."""
    model = build_model(settings.model, seed=settings.seed)
    if start is not None:
        model.load_state_dict(start)
    names = trained_names(model, settings.trainable)
    sigmas = [
        calibrate_noise(
            target_epsilon=eps,
            delta=1e-5,
            sample_rate=sample_rate(len(s.train), settings.batch_size),
            total_steps=rounds
            * settings.local_epochs
            * steps_per_epoch(len(s.train), settings.batch_size),
        )
        for s in sites
    ]
    seconds = []
    for _ in range(rounds):
        states, weights = [], []
        for site, sigma in zip(sites, sigmas, strict=True):
            local = build_model(settings.model)
            local.load_state_dict(model.state_dict())
            freeze_all_but(local, names)
            started = time.perf_counter()
            train_local(local, site.train, settings, device=CPU, dp=DpStep(sigma, 1.0))
            seconds.append(time.perf_counter() - started)
            states.append(local.state_dict())
            weights.append(len(site.train))
        total = sum(weights)
        model.load_state_dict(
            {
                k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) / total
                for k in states[0]
            }
        )
    return model, statistics.mean(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[3.0, 8.0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        private = [load_site(_site(tmp, i, SynthConfig(3, 300, 0)), size=64) for i in range(3)]
        shifted = [
            load_site(_site(tmp, i, SynthConfig(6, 200, 11)), size=64, val_fraction=0.5).val
            for i in (3, 4)
        ]
        public = load_site(_site(tmp, 5, SynthConfig(6, 300, 21)), size=64)
        print(
            "| start | ε | seeds | AUC in-distribution (mean, min–max) | AUC unseen scanners | "
            "site-seconds per round |\n|---|---|---|---|---|---|",
            flush=True,
        )
        for eps in args.epsilons:
            rows: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in ARMS}
            for seed in args.seeds:
                base = TrainSettings(learning_rate=0.05, batch_size=64, local_epochs=3, seed=seed)
                start = pretrained(public, base, args.pretrain_epochs)
                for arm in ARMS:
                    settings = replace(base, trainable="head" if "head" in arm else "all")
                    weights = None if arm == ARMS[0] else start
                    model, seconds = federate(
                        private, settings, weights, rounds=args.rounds, eps=eps
                    )
                    home = _auc(model, [s.val for s in private])
                    rows[arm].append((home, _auc(model, shifted), seconds))
            for arm, results in rows.items():
                print(_row(arm, eps, results), flush=True)


def _row(arm: str, eps: float, results: list[tuple[float, float, float]]) -> str:
    home, shift, seconds = (list(column) for column in zip(*results, strict=True))
    return (
        f"| {arm} | {eps:g} | {len(results)} | {statistics.mean(home):.3f} "
        f"({min(home):.3f}–{max(home):.3f}) | {statistics.mean(shift):.3f} "
        f"({min(shift):.3f}–{max(shift):.3f}) | {statistics.mean(seconds):.2f} |"
    )


if __name__ == "__main__":
    main()
