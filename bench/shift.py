"""Accuracy that holds at another hospital: leave-one-site-out on PneumoniaMNIST, with an other-
scanner and an other-prevalence variant of the held-out site.

Each fold is a real in-process federation (``bench/npz_federation.py``'s path: fedscan's ClientApp,
DP-SGD, accounting, the coordinator's rounds) over two of three Dirichlet(0.5) shards; seed ``s``
holds out shard ``s mod 3``, so three seeds hold out every shard once. The run's own pooled
validation histogram (the training sites' validation shards) sets what a deployment would store:
the Youden threshold, a threshold for sensitivity 0.90, and the calibration map. The held-out
shard (its train and validation images, never seen) then scores the final model three ways:

- ``held-out site``: as it is (another label mix: Dirichlet shards differ in prevalence);
- ``other scanner``: the same images through another scanner profile (gamma 1.4, contrast 0.8,
  a 1-pixel blur and noise σ 0.03);
- ``37.5 % normal``: resampled to the official test split's class mix.

Server-side variants cost no training: every round's global model is kept, and an exponential
moving average over rounds (``ema-D``, decay D) is scored like the final model.

    .venv/bin/python bench/shift.py --configs today,r10e1 --privacy none,8,3 --seeds 0,1,2

Folds are written to ``--out`` as they finish and skipped when found, so an interrupted run goes
on where it stopped; the table is printed from whatever folds are there. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from npz_federation import npz_federation  # bench/ is on sys.path when a bench script runs

import fedscan.server.round_checkpoint as round_checkpoint
from fedscan.common.config import RunConfig
from fedscan.common.data.imageset import ImageSet
from fedscan.common.data.npz import load_npz_shard
from fedscan.common.metrics.classification import predict
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.inprocess import flower_identity

SITES, PARTITION = 3, "dirichlet:0.5"
SIZE = get_model_spec("small-cnn").input_size  # every model here takes 64 × 64 images
CPU = torch.device("cpu")
EMA_DECAYS = (0.5, 0.75)
CONFIGS = {  # name → RunConfig overrides (train settings under "train")
    "today": {},  # the defaults before issue 21: 5 rounds × 3 local epochs
    "r10e1": {"rounds": 10, "train": {"local_epochs": 1}},
    "today-int": {"train": {"augment_intensity": True}},  # + scanner-like intensity augmentation
    "r15e1": {"rounds": 15, "train": {"local_epochs": 1}},
    "r10e1-lr03": {"rounds": 10, "train": {"local_epochs": 1, "learning_rate": 0.03}},
    # Server optimisers: FedAdam at Flower's step and smaller.
    "fedadam": {"strategy": "fedadam"},
    "fedadam-e01": {"strategy": "fedadam", "server_learning_rate": 0.01},
    # Larger expected batches (σ recalibrated by the accountant), the learning rate scaled along.
    "b128": {"train": {"batch_size": 128, "learning_rate": 0.1}},
    "b256": {"train": {"batch_size": 256, "learning_rate": 0.2}},
    "fedavgm": {"strategy": "fedavgm"},  # server momentum 0.9 (Hsu et al. 2019), server step 1
    "fedavgm-05": {"strategy": "fedavgm", "server_momentum": 0.5},
    "cosine": {"train": {"lr_schedule": "cosine"}},  # lr 0.05 → 0.005 over the rounds
    "views4": {"train": {"augment_views": 4}},  # augmentation multiplicity K = 4
    "ws": {"train": {"model": "small-cnn-ws"}},  # weight standardisation + GroupNorm
    "wide": {"train": {"model": "small-cnn-wide"}},  # twice the channels
    "resnet18": {"train": {"model": "resnet18"}},  # MONAI ResNet-18, GroupNorm, at 64 px
}


def run_config(name: str, privacy: str, seed: int) -> RunConfig:
    overrides = dict(CONFIGS[name])
    train = TrainSettings(seed=seed, **overrides.pop("train", {}))
    dp = (
        PrivacyConfig(enabled=False)
        if privacy == "none"
        else PrivacyConfig(epsilon=float(privacy), delta=1e-5)
    )
    return RunConfig(
        min_sites=SITES - 1, cross_site=False, seed=seed, privacy=dp, train=train, **overrides
    )


def _resolution(images: torch.Tensor, pixels: int) -> torch.Tensor:
    size = images.shape[-1]
    small = F.interpolate(images, size=(pixels, pixels), mode="area")
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def _framed(images: torch.Tensor, zoom: float, degrees: float) -> torch.Tensor:
    angle = math.radians(degrees)
    matrix = torch.tensor(
        [
            [math.cos(angle) / zoom, -math.sin(angle) / zoom, 0.0],
            [math.sin(angle) / zoom, math.cos(angle) / zoom, 0.0],
        ]
    ).expand(len(images), 2, 3)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def scanner_profiles(images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Other scanners: the held-out images as another device would have produced them."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return {
        "low-res": _resolution(images, 16).clamp(0, 1) ** 1.3,  # 16 px detail, darker mid-tones
        "noisy": (0.5 + (images - 0.5) * 0.7 + 0.08 * noise).clamp(0, 1),  # flat and noisy
        "framed": (_framed(images, 1.15, 6.0) + 0.08).clamp(0, 1),  # tighter field, tilted, bright
    }


def prevalence_resampled(labels: np.ndarray, normal_share: float, seed: int) -> np.ndarray:
    """Indices drawn with replacement so that ``normal_share`` of them are label 0."""
    rng = np.random.default_rng(seed)
    n = labels.size
    normals = rng.choice(np.flatnonzero(labels == 0), round(n * normal_share))
    positives = rng.choice(np.flatnonzero(labels == 1), n - normals.size)
    return np.concatenate([normals, positives])


def held_out_sets(npz: Path, held_out: int, seed: int, size: int) -> dict[str, ImageSet]:
    data = load_npz_shard(
        npz, site=held_out, sites=SITES, partition=PARTITION, seed=seed, size=size
    )
    images = torch.cat([data.train.images, data.val.images])
    labels = torch.cat([data.train.labels, data.val.labels])
    resample = torch.as_tensor(prevalence_resampled(labels.numpy(), 0.375, seed))
    return {
        "held-out site": ImageSet(images, labels),
        **{
            f"scanner {name}": ImageSet(shifted, labels)
            for name, shifted in scanner_profiles(images, seed).items()
        },
        "37.5 % normal": ImageSet(images[resample], labels[resample]),
    }


def training_val(npz: Path, held_out: int, seed: int, size: int) -> ImageSet:
    """The training sites' validation shards together: what the run's pooled histogram saw."""
    parts = [
        load_npz_shard(npz, site=i, sites=SITES, partition=PARTITION, seed=seed, size=size).val
        for i in range(SITES)
        if i != held_out
    ]
    return ImageSet(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def round_models(run_path: Path) -> list[dict[str, torch.Tensor]]:
    checkpoints = sorted((run_path / "checkpoints").glob("round-*.ckpt"))
    return [round_checkpoint.decode(path.read_bytes()).arrays for path in checkpoints]


def ema(states: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    average = {k: v.clone().double() for k, v in states[0].items()}
    for state in states[1:]:
        for key, value in state.items():
            average[key] = decay * average[key] + (1 - decay) * value.double()
    return {k: v.to(states[-1][k].dtype) for k, v in average.items()}


def train_fold(npz: Path, root: Path, name: str, privacy: str, seed: int) -> dict:
    """Train one fold; every round's global model is kept."""
    config = run_config(name, privacy, seed)
    round_checkpoint.KEEP = 10**6  # every round's global model, for the moving averages
    result = npz_federation(
        npz, root, config, sites=SITES, partition=PARTITION, seed=seed, skip=seed % SITES
    )
    return {
        "config": name,
        "privacy": privacy,
        "seed": seed,
        "held_out": seed % SITES,
        "model": config.train.model,
        "rounds": round_models(result.run_dir.path),
    }


def evaluation_sets(npz: Path, held_out: int, seed: int, size: int) -> dict[str, ImageSet]:
    """The training sites' validation and the held-out site's sets of one seed (the same for
    every configuration)."""
    return {
        "validation": training_val(npz, held_out, seed, size),
        **held_out_sets(npz, held_out, seed, size),
    }


def score_fold(fold: dict, sets: dict[str, ImageSet]) -> dict:
    """Every model variant's scores on the validation and held-out sets (no metrics yet)."""
    states = fold["rounds"]
    variants = {"final": states[-1], **{f"ema-{d}": ema(states, d) for d in EMA_DECAYS}}
    scored: dict[str, dict] = {}
    for variant, state in variants.items():
        model = build_model(fold["model"])
        model.load_state_dict(state)
        scored[variant] = {
            where: predict(model, data, device=CPU)[0].astype(float).tolist()
            for where, data in sets.items()
        }
    labels = {where: data.labels.numpy().astype(int).tolist() for where, data in sets.items()}
    keep = ("config", "privacy", "seed", "held_out")
    return {**{k: fold[k] for k in keep}, "labels": labels, "scores": scored}


def run_missing(
    npz: Path, out: Path, names: list[str], privacies: list[str], seeds: list[int]
) -> None:
    """Train the folds not yet in ``out`` (models in .pt), then score those not yet scored."""
    for privacy in privacies:
        for seed in seeds:
            for name in names:
                stem = out / f"{name}_{privacy}_{seed}"
                if not stem.with_suffix(".pt").exists():
                    with flower_identity(), tempfile.TemporaryDirectory() as tmp:
                        fold = train_fold(npz, Path(tmp), name, privacy, seed)
                    torch.save(fold, stem.with_suffix(".pt"))
                    print(f"fold trained: {stem.name}", flush=True)
    unscored = [p for p in sorted(out.glob("*.pt")) if not p.with_suffix(".json").exists()]
    by_seed: dict[int, list[Path]] = {}
    for path in unscored:
        by_seed.setdefault(int(path.stem.rsplit("_", 1)[1]), []).append(path)
    for seed, paths in sorted(by_seed.items()):
        sets = evaluation_sets(npz, seed % SITES, seed, SIZE)  # loaded once per seed
        for path in paths:
            fold = torch.load(path, weights_only=True)
            path.with_suffix(".json").write_text(json.dumps(score_fold(fold, sets)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--configs", default="today,r10e1")
    parser.add_argument("--privacy", default="none,8,3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("bench-results/shift"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        run_missing(
            args.npz.resolve(),
            args.out,
            args.configs.split(","),
            args.privacy.split(","),
            [int(s) for s in args.seeds.split(",")],
        )
    from shift_table import print_tables  # noqa: PLC0415

    print_tables([json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))])


if __name__ == "__main__":
    main()
