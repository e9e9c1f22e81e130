"""Default settings, in one light module (the CLI reads them without importing torch).

Each tuned default lives here once, with the measurement behind it; the settings dataclasses
(:mod:`fedscan.common.config`) take their defaults from these names, and nothing else repeats them.

Tuned on the synthetic sites (3 × 300 images, ε = 8, δ = 1e-5, FedAvg, 5 rounds,
train/validation splits only). Batch 64 / lr 0.05 / 3 local epochs beat batch
32 / lr 0.02 in-distribution (AUC 0.967, 0.974 vs 0.930, 0.858 over two seeds),
on three unseen scanner profiles (≈0.97 vs ≈0.88) and under a contrast shift
(0.94 vs 0.92): ``bench/defaults_shift.py`` reproduces the comparison. Batch
128 or 5 local epochs needed more noise and did no better.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "small-cnn"
ROUNDS = 5
LOCAL_EPOCHS = 3
BATCH_SIZE = 64
LEARNING_RATE = 0.05
MOMENTUM = 0.9
AUGMENT_INTENSITY = False  # scanner-like intensity augmentation; see bench/shift.py
AUGMENT_VIEWS = 1  # augmentation multiplicity: views per image averaged before clipping
# Where augmentation runs: batched on the training device (GPU or CPU), or per image in the loader
# (MONAI): the same transforms and ranges, another random stream (seeded runs before 2026-12-07).
AUGMENT_DEVICE, AUGMENT_LOADER = "device", "loader"
AUGMENT_PLACES = (AUGMENT_DEVICE, AUGMENT_LOADER)
AUGMENT_ON = AUGMENT_DEVICE
LR_SCHEDULES = ("constant", "cosine")  # the site's learning rate over a run's rounds
LR_SCHEDULE = "constant"
SERVER_MOMENTUM = 0.9  # FedAvgM (Hsu et al. 2019)
# Secure aggregation: the L2 bound a site's update (trained − received model) is clipped to before
# quantisation. Generous, so it clips nothing a sane round makes (the norm gate refuses far less,
# 10 × the median); one quantisation step is 100 / 2^20 ≈ 1e-4 per unit of weight, so the mean's
# error stays below sites × 1e-4 / (sum of num-examples): ~3e-6 for 3 sites of 100 images.
SECURE_UPDATE_BOUND = 100.0
CENTRAL_CLIP_NORM = 1.0  # central DP: the L2 bound on one site's update (Flower's fixed clipping)
EPSILON = 8.0
DELTA = 1e-5
# A site's metric releases (its [privacy] metrics policy and their budget, validation images only).
METRICS_POLICY = "dp"
METRICS_EPSILON = 4.0
CLIP_NORM = 1.0
STRATEGY = "fedavg"
SEED = 0  # a run's seed (model initialisation, node sampling), and the synthetic sites'
SITES = 3
IMAGES_PER_SITE = 300
VOLUMES_PER_SITE = 60  # synthetic CT: series per site (each ~40 slices; ~6 s to write a site)
VAL_FRACTION = 0.25  # share of a site's patients kept for validation (stratified by label)
FRAMES = "middle"  # multi-frame files: one sample, the middle frame ("all": every frame a sample)
DECODE_WORKERS = 2  # decoder processes per site
DECODE_TIMEOUT_S = 60.0  # per-file decode limit: a decoder that hangs longer is killed


@dataclass(frozen=True)
class TaskDefaults:
    """Run settings whose default depends on the task; a run that leaves them out gets these."""

    model: str
    learning_rate: float
    cross_site: bool


# Segmentation (task = "segmentation") differs where the task needs it: the U-Net and lr 0.1. On
# the synthetic sites' finding masks (3 × 300 images, batch 64, 3 local epochs;
# bench/segmentation.py):
# - without DP, 5 rounds: lr 0.1 reached pooled Dice 0.868 against 0.816 at 0.05, and 0.86–0.88
# against
#   0.81–0.84 on three unseen scanner profiles;
# - 5 rounds stay the default: at ε = 8, 10 rounds did better (0.777 and 0.758 in two runs, against
# 0.685 and
#   0.709), but at ε = 3 they collapsed to Dice 0.005 (5 rounds: 0.581). Over 10 rounds at ε = 8,
# lr 0.2 (0.761), batch 128 (0.720) and 5 local epochs (0.736) did no better. DP noise differs from
# run to run. Cross-site validation ranks classifiers (AUC), so it is off.
# Multi-class and multi-label runs train the classification models with a head per class; the
# cross-site matrix ranks binary classifiers by one AUC, so it is off for them.
TASK_DEFAULTS = {
    "classification": TaskDefaults(model=MODEL, learning_rate=LEARNING_RATE, cross_site=True),
    "multiclass": TaskDefaults(model=MODEL, learning_rate=LEARNING_RATE, cross_site=False),
    "multilabel": TaskDefaults(model=MODEL, learning_rate=LEARNING_RATE, cross_site=False),
    "segmentation": TaskDefaults(model="unet", learning_rate=0.1, cross_site=False),
}
TASKS = tuple(TASK_DEFAULTS)


@dataclass(frozen=True)
class SecureAggregationDefaults:
    """Run settings whose default changes under secure aggregation (a run may still set them)."""

    cross_site: bool = False  # it would release each site's own fine-tuned model


SECURE_AGGREGATION_DEFAULTS = SecureAggregationDefaults()
