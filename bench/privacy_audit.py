"""The empirical privacy audit on PneumoniaMNIST: membership inference against a model trained
without DP, at ε 8 and at ε 3, with the attacks ``fedscan privacy audit`` runs at a site.

From the npz's train split, ``--members`` images train the target and as many others are held
back (non-members; disjoint, drawn at random). Each target trains as a site trains
(:func:`fedscan.common.models.training.train_local`: small-cnn at 64², batch 64, momentum 0.9,
augmentation on). Under DP it trains with the run defaults — lr 0.05, 15 epochs (a default run's
5 rounds × 3 local epochs) — and σ is calibrated by the site's accountant
(:mod:`fedscan.common.privacy`, PRV) for those steps at δ 1e-5; the table's ε is the accountant's
for the steps actually taken. Without DP the default lr 0.05 (tuned for DP-SGD's clipped, noised
gradients) never fits the training set (train accuracy 0.96 after 60 epochs on 250 images), so
the no-DP target trains at lr 0.01 for 40 epochs: the overfit model an attack must catch for its
other rows to mean anything. ``--shadows`` shadow models train exactly as their row's target
(DP included) on complementary random halves of the members ∪ non-members pool; the
loss-threshold attack and offline LiRA (:mod:`fedscan.common.membership`; LiRA queries five shifted
views) then score every pool image. One markdown table; TPR and the ε lower bound (95 %
Clopper–Pearson, δ 1e-5) are LiRA's, the loss attack's in parentheses.

    OMP_NUM_THREADS=1 nice -n 10 python bench/privacy_audit.py [--members 1000] [--shadows 8]
        [--settings none,8,3] [--epochs 15] [--no-dp-epochs 40] [--no-dp-learning-rate 0.01]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.data.npz import load_npz_split, preprocess
from fedscan.common.membership import AttackFigures, attack_figures, fit_out, lira_offline
from fedscan.common.membership.attacks import loss_attack
from fedscan.common.membership.scores import confidence, example_loss, model_logits
from fedscan.common.membership.shadows import shadow_splits, train_shadows
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.privacy import calibrate_noise, epsilon_spent, sample_rate, steps_per_epoch
from fedscan.common.training_settings import TrainSettings

DELTA = 1e-5
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Outcome:
    setting: str
    training: str
    epsilon: float
    sigma: float
    train_accuracy: float
    held_out_accuracy: float
    loss: AttackFigures
    lira: AttackFigures
    seconds: float


def _pool(npz: Path, members: int, seed: int, size: int) -> tuple[ImageSet, np.ndarray]:
    """2 × ``members`` train-split images at random: the first half members, the rest not."""
    images, labels = load_npz_split(npz, "train")
    chosen = np.random.default_rng(seed).permutation(len(labels))[: 2 * members]
    if len(chosen) < 2 * members:
        raise SystemExit(f"The train split has {len(labels)} images; --members at most half.")
    pool = ImageSet(preprocess(list(images[chosen]), size), torch.as_tensor(labels[chosen]))
    return pool, np.r_[np.ones(members, bool), np.zeros(members, bool)]


def _dp(epsilon: float | None, images: int, settings: TrainSettings) -> DpStep | None:
    if epsilon is None:
        return None
    steps = settings.local_epochs * steps_per_epoch(images, settings.batch_size)
    sigma = calibrate_noise(
        target_epsilon=epsilon,
        delta=DELTA,
        sample_rate=sample_rate(images, settings.batch_size),
        total_steps=steps,
    )
    return DpStep(sigma, 1.0)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(((logits > 0) == (labels == 1)).mean())


def _setting(
    epsilon: float | None, pool: ImageSet, is_member: np.ndarray, args: argparse.Namespace
) -> Outcome:
    started = time.monotonic()
    settings = TrainSettings(
        local_epochs=args.epochs if epsilon else args.no_dp_epochs,
        learning_rate=args.learning_rate if epsilon else args.no_dp_learning_rate,
        seed=args.seed,
    )
    members = ImageSet(pool.images[is_member], pool.labels[is_member])
    dp = _dp(epsilon, len(members), settings)
    target = build_model(settings.model, seed=args.seed)
    history = train_local(target, members, settings, dp=dp, device=CPU).history
    logits, labels = model_logits(target, pool.images, device=CPU), pool.labels.numpy()
    splits = shadow_splits(len(pool), args.shadows, seed=args.seed + 1)
    phi = train_shadows(
        pool, splits, settings, dp=dp, device=CPU, progress=lambda done, total: _tick(done, total)
    )
    losses = example_loss(logits, labels, settings.task)
    lira_scores = lira_offline(confidence(logits, labels, settings.task), fit_out(phi, splits))
    return Outcome(
        setting="no DP" if epsilon is None else f"ε {epsilon:g}",
        training=f"{settings.learning_rate:g} × {settings.local_epochs}",
        epsilon=epsilon_spent(history, DELTA) if dp else math.inf,
        sigma=dp.noise_multiplier if dp else 0.0,
        train_accuracy=_accuracy(logits[is_member], labels[is_member]),
        held_out_accuracy=_accuracy(logits[~is_member], labels[~is_member]),
        loss=attack_figures("loss", loss_attack(losses), is_member, delta=DELTA),
        lira=attack_figures("lira", lira_scores, is_member, delta=DELTA),
        seconds=time.monotonic() - started,
    )


def _tick(done: int, total: int) -> None:
    print(f"  shadow {done}/{total} trained", flush=True)


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _table(outcomes: list[Outcome]) -> str:
    lines = [
        "| setting | lr × epochs | ε (PRV) | σ | train / held-out accuracy | loss AUC | LiRA AUC | "
        "TPR@0.1%FPR | TPR@1%FPR | ε lower bound | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        low, one = (
            f"{_percent(o.lira.tpr_at_fpr[fpr])} ({_percent(o.loss.tpr_at_fpr[fpr])})"
            + ("" if o.lira.fpr_resolved[fpr] else " *")
            for fpr in (0.001, 0.01)
        )
        spent = "∞" if math.isinf(o.epsilon) else f"{o.epsilon:.2f}"
        lines.append(
            f"| {o.setting} | {o.training} | {spent} | "
            f"{o.sigma:.3f} | {o.train_accuracy:.3f} / {o.held_out_accuracy:.3f} | "
            f"{o.loss.auc:.3f} | {o.lira.auc:.3f} | {low} | {one} | "
            f"{o.lira.epsilon_lower_bound:.2f} ({o.loss.epsilon_lower_bound:.2f}) | "
            f"{o.seconds / 60:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("/work/shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--members", type=int, default=1000, help="Members, and as many others.")
    parser.add_argument("--shadows", type=int, default=8, help="Shadow models (even).")
    parser.add_argument("--epochs", type=int, default=15, help="Epochs of every DP model.")
    parser.add_argument("--learning-rate", type=float, default=0.05, help="lr of the DP models.")
    parser.add_argument("--no-dp-epochs", type=int, default=40)
    parser.add_argument("--no-dp-learning-rate", type=float, default=0.01)
    parser.add_argument("--settings", default="none,8,3", help="none (no DP) and/or ε targets.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    pool, is_member = _pool(
        args.npz, args.members, args.seed, get_model_spec("small-cnn").input_size
    )
    outcomes = []
    for setting in args.settings.split(","):
        epsilon = None if setting == "none" else float(setting)
        print(f"{setting}: the target and {args.shadows} shadows", flush=True)
        outcomes.append(_setting(epsilon, pool, is_member, args))
        print(_table(outcomes[-1:]), flush=True)
    print(
        f"\n{args.members} members / {args.members} non-members, {args.shadows} shadows, "
        f"δ {DELTA:g}; wall {time.monotonic() - started:.0f} s\n"
    )
    print(_table(outcomes))
    if not all(o.lira.fpr_resolved[0.001] for o in outcomes):
        print("\n* fewer than 1000 non-members: the TPR at zero false positives")


if __name__ == "__main__":
    main()
