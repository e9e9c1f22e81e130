"""Pooled AUC from the sites' DP metric releases against the exact pooled AUC.

    .venv/bin/python bench/metric_privacy.py --budgets 1 2 4 8 --repeats 300

For two federations — the demo's (3 synthetic sites of 300 images, fedscan's default split) and
PneumoniaMNIST's (3 sites of its 4 690 training images, each site validating on a third of its 524
validation images) — a small-cnn is trained once (plain SGD on the pooled training images: the
metric release does not depend on how the model was trained), and each site's exact validation
histogram is computed. ``--demo-model runs/<id>/final.pt`` adds the demo scored by the model a
default ``fedscan simulate`` run made (DP, 5 rounds), on the same sites: that proxy's scores lie
within 0.25 in logit of each other, which the coarse bins tie. Then, for each site metric budget
ε_m (δ = 1e-5, the default run: 5 rounds, the cross-site evaluation planned), ``--repeats`` times:
every site makes the final evaluation's release (its noise multiplier as ``[privacy] metrics =
"dp"`` calibrates it), a per-round release, and the final release of ``final-only`` (its share with
the cross-site one); the coordinator pools them as a run would.
Printed: the exact pooled AUC (fine bins), the mean and 95th percentile of |noisy − exact|, the
bias, and how often the widened 95 % interval covers the exact value; beside them an "oracle": the
mean |error| of the pooled AUC released as one number by a party holding every site's images, at
the final release's noise multiplier: what the noise alone costs at that budget, with no bins and
no per-site split. Not part of the tests.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.metrics.classification import predict
from fedscan.common.metrics.histogram import ScoreHistogram, auc
from fedscan.common.metrics.private import NoisyEvaluation, pooled_noisy
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import train_local
from fedscan.common.privacy import metric_noise
from fedscan.common.training_settings import TrainSettings

NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist_trainval.npz"
ROUNDS, DELTA = 5, 1e-5
CROSS_SITE = True  # a binary classification run's default: its cross-site release is planned too
_WHAT = ("σ", "mean abs", "p95", "bias", "CI covers")


def demo_sites(root: Path) -> tuple[ImageSet, list[ImageSet]]:
    """The demo's sites (fedscan's default synthetic sites), split as a site splits them."""
    from fedscan.common.data.site import load_site
    from fedscan.common.data.synth import SynthConfig, generate_sites

    sites = [load_site(p, size=64) for p in generate_sites(root, SynthConfig())]
    images = torch.cat([site.train.images for site in sites])
    train = ImageSet(images, torch.cat([site.train.labels for site in sites]))
    return train, [site.val for site in sites]


def npz_sites() -> tuple[ImageSet, list[ImageSet]]:
    """PneumoniaMNIST: the training images pooled, the validation images in three sites."""
    from fedscan.common.data.npz import load_npz_split, preprocess

    def split(name: str) -> ImageSet:
        images, labels = load_npz_split(NPZ, name)
        keys = tuple(f"{name}:{i}" for i in range(len(labels)))
        return ImageSet(preprocess(list(images), 64), torch.as_tensor(labels), keys)

    val = split("val")
    parts = np.array_split(np.random.default_rng(0).permutation(len(val)), 3)
    index = [torch.as_tensor(p) for p in parts]
    return split("train"), [ImageSet(val.images[i], val.labels[i]) for i in index]


def site_histograms(
    train: ImageSet, vals: list[ImageSet], model: torch.nn.Module | None = None
) -> list[ScoreHistogram]:
    """Each site's exact validation histogram under ``model``, or under a proxy trained here."""
    if model is None:
        torch.manual_seed(0)
        model = build_model("small-cnn", seed=0)
        # 15 epochs: what a default run's 5 rounds × 3 local epochs give a site (3 left the demo's
        # scores within 0.05 in logit of each other: every coarse bin tie, AUC 0.5 however noisy)
        settings = TrainSettings(local_epochs=15, batch_size=64, augment=False)
        train_local(model, train, settings, dp=None, device=torch.device("cpu"))
    found = []
    for val in vals:
        scores, _ = predict(model, val, device=torch.device("cpu"))
        found.append(ScoreHistogram.of(scores, val.labels.numpy()))
    return found


def oracle(sites: list[ScoreHistogram], noise: float) -> float:
    """The mean |error| of a release far better informed than any site's: the exact pooled AUC
    itself, as one number, by one party holding every site's images, with the same noise
    multiplier. One image moves the pooled AUC by at most 1/(min(P, N) + 1), so the noise's
    deviation is ``noise`` times that, and its mean absolute value √(2/π) times the deviation."""
    positives = sum(float(h.positives.sum()) for h in sites)
    negatives = sum(float(h.negatives.sum()) for h in sites)
    return math.sqrt(2 / math.pi) * noise / (min(positives, negatives) + 1)


def row(name: str, sites: list[ScoreHistogram], budget: float, repeats: int) -> str:
    exact = auc(sum(sites[1:], sites[0]))
    plan = {"epsilon": budget, "delta": DELTA, "final": True, "cross_site": CROSS_SITE}
    per_round, final, _ = metric_noise(rounds=ROUNDS - 1, **plan)
    final_only = metric_noise(rounds=0, **plan)[1]
    images = sum(int(h.positives.sum() + h.negatives.sum()) for h in sites)
    cells = [name, f"{budget:g}", str(images), f"{exact:.3f}", f"{oracle(sites, final):.3f}"]
    for noise in (final, per_round, final_only):
        errors, covered = [], 0
        for _ in range(repeats):
            released = [NoisyEvaluation.release(h, noise_multiplier=noise) for h in sites]
            figures, _, _ = pooled_noisy(released, "youden")
            errors.append(figures["auc"] - exact)
            covered += figures["auc-ci-low"] <= exact <= figures["auc-ci-high"]
        gaps = np.abs(errors)
        cells += [
            f"{noise:.2f}",
            f"{gaps.mean():.3f}",
            f"{np.percentile(gaps, 95):.3f}",
            f"{np.mean(errors):+.3f}",
            f"{covered / repeats:.0%}",
        ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument(
        "--demo-model",
        type=Path,
        default=None,
        help="final.pt of a default `fedscan simulate` run: the demo's own model, beside the proxy",
    )
    args = parser.parse_args()
    started = time.monotonic()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        demo = demo_sites(Path(tmp))
        federations = {"demo, proxy model (3 × 300 synthetic)": site_histograms(*demo)}
        if args.demo_model is not None:  # the model a `fedscan simulate` run of the demo made
            model, _ = load_checkpoint(args.demo_model)
            federations["demo, its own final model"] = site_histograms(*demo, model=model)
    federations["PneumoniaMNIST (3 sites)"] = site_histograms(*npz_sites())
    kinds = ("final (dp)", "per round (dp)", "final (final-only)")
    columns = [f"{kind} {what}" for kind in kinds for what in _WHAT]
    print(
        "| federation | ε_m per run | validation images | exact pooled AUC | "
        "oracle (the pooled AUC as one release) mean abs | " + " | ".join(columns) + " |"
    )
    print("|" + "---|" * (5 + len(columns)))
    for name, sites in federations.items():
        for budget in args.budgets:
            print(row(name, sites, budget, args.repeats), flush=True)
    print(
        f"\n{time.monotonic() - started:.0f} s; δ = {DELTA:g}, {ROUNDS} rounds planned, "
        f"cross-site {'planned' if CROSS_SITE else 'not planned'}"
    )


if __name__ == "__main__":
    main()
