"""Do the explanation maps point at the finding? The sanity check of ``fedscan explain``'s maps.

One synthetic hospital (``common/data/synth.py``: its masks mark where each opacity is) trains
small-cnn without DP for a few epochs; on its validation images with a finding, each method's maps
of the trained model and of a randomly initialised one (Adebayo et al. 2018) score the fraction of
their mass inside the true region (energy-based pointing game) and how often their peak falls in it
(pointing game). A uniform map scores the region's share of the image (printed as the baseline).

    .venv/bin/python bench/explain.py [--images 400] [--epochs 12] [--seed 0] [--augment]

Prints the validation AUC and one markdown table. Under two minutes on 2 CPU cores. Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedscan.common.data.sources import FolderSource
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.explain import ExplainSettings, PointingScore, randomisation_test
from fedscan.common.explain.pointing import region_share
from fedscan.common.explain.settings import METHODS, TITLES
from fedscan.common.metrics.classification import binary_metrics, predict
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import train_local
from fedscan.common.training_settings import TrainSettings

MODEL = "small-cnn"


def table(scores: list[PointingScore], uniform: float) -> str:
    """method × (trained, random) → mean mass inside (peak inside) — markdown."""
    cells = {(score.method, score.model): score for score in scores}
    lines = [
        "| method | trained: mass inside | random: mass inside | trained: peak inside | "
        "random: peak inside | images (no mass: trained / random) |",
        "|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(score.method for score in scores):
        trained, random = cells[method, "trained"], cells[method, "random"]
        lines.append(
            f"| {TITLES[method]} | {trained.mass:.3f} | {random.mass:.3f} | {trained.peak:.2f} | "
            f"{random.peak:.2f} | {trained.scored + trained.massless} "
            f"({trained.massless} / {random.massless}) |"
        )
    lines.append(f"| uniform map (the region's share) | {uniform:.3f} | {uniform:.3f} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        (site,) = generate_sites(Path(folder), SynthConfig(1, args.images, args.seed))
        source = FolderSource("bench", str(site), cache_dir="", seed=args.seed)
        data = replace(source, val_fraction=0.3).load(64, masks=True)
    model = build_model(MODEL, seed=args.seed)
    settings = TrainSettings(
        local_epochs=args.epochs, batch_size=32, augment=args.augment, seed=args.seed
    )
    train_local(model, data.train, settings, dp=None, device=torch.device("cpu"))
    scores, _ = predict(model, data.val, device=torch.device("cpu"))
    auc = binary_metrics(data.val.labels.numpy(), scores, threshold=0.5)["auc"]
    found = randomisation_test(
        model,
        data.val,
        model_name=MODEL,
        settings=ExplainSettings(methods=METHODS),
        seed=args.seed + 1,
    )
    print(
        f"{MODEL}, {len(data.train)} training images, {args.epochs} epochs without DP; "
        f"validation AUC {auc:.3f} on {len(data.val)} images "
        f"({int(np.sum(data.val.labels.numpy()))} with a finding); "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print(table(found, region_share(data.val)))


if __name__ == "__main__":
    main()
