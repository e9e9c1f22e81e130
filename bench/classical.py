"""The classical pipeline against the default CNN, federated, at ε = ∞, 8 and 3.

In-process federations (``bench/npz_federation.py``) on PneumoniaMNIST's train split: 3 sites
partitioned Dirichlet(0.5) on labels, seed 1, the README's defaults except the model and
``--rounds``. Pooled validation AUC, accuracy, recall (sensitivity) and F1 at the Youden threshold
chosen on the pooled validation histogram; ``train s`` is the sites' own time (data, features and
training), summed over sites and rounds; ``wall s`` the whole federation.

    python bench/classical.py [--npz ../shared/data/pneumoniamnist_trainval.npz] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

from npz_federation import npz_federation  # bench/ is on sys.path when a bench script runs

from fedscan.common.config import RunConfig
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.inprocess import flower_identity

MODELS = ("small-cnn", "hog-svm", "hog-logreg", "lbp-svm", "lbp-logreg")
EPSILONS = (math.inf, 8.0, 3.0)


def _row(npz: Path, root: Path, model: str, epsilon: float, rounds: int) -> str:
    privacy = (
        PrivacyConfig(enabled=False)
        if math.isinf(epsilon)
        else PrivacyConfig(epsilon=epsilon, delta=1e-5)
    )
    config = RunConfig(
        rounds=rounds,
        min_sites=3,
        cross_site=False,
        seed=1,
        privacy=privacy,
        train=TrainSettings(model=model, seed=1),
    )
    started = time.monotonic()
    result = npz_federation(npz, root, config, sites=3, partition="dirichlet:0.5")
    wall = time.monotonic() - started
    pooled = result.history[-1]["pooled"]
    train_s = sum(
        site.get("site-seconds", 0.0)
        for line in result.history
        for site in line.get("train", {}).values()
    )
    return (
        f"| {model} | {'∞' if math.isinf(epsilon) else f'{epsilon:g}'} | {pooled['auc']:.3f} | "
        f"{pooled['accuracy']:.3f} | {pooled['sensitivity']:.3f} | {pooled['f1']:.3f} | "
        f"{train_s:.0f} | {wall:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(
        f"\n3 sites, Dirichlet(0.5) PneumoniaMNIST, {args.rounds} rounds, defaults otherwise; "
        "pooled validation\n"
    )
    print("| model | ε | AUC | accuracy | recall | F1 | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    with flower_identity(), tempfile.TemporaryDirectory(prefix="fedscan-classical-") as tmp:
        for index, model in enumerate(args.models.split(",")):
            for epsilon in EPSILONS:
                print(
                    _row(
                        args.npz.resolve(),
                        Path(tmp) / f"{index}-{epsilon}",
                        model,
                        epsilon,
                        args.rounds,
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
