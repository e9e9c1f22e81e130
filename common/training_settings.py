"""One site's local training settings for a round: :class:`TrainSettings`, a frozen part of the
run configuration (:class:`fedscan.common.config.RunConfig`) that every site receives, and
:func:`check_training`, which both the coordinator and each site apply to it.

Keys, types, defaults and meanings live on the fields (:func:`fedscan.common.settings.setting`);
a default lives once, in :mod:`fedscan.common.defaults`. Imports no torch: ``fedscan run`` and
``fedscan status`` start without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedscan.common import defaults
from fedscan.common.errors import ConfigError
from fedscan.common.models.registry import get_model_spec, models_for
from fedscan.common.models.trainable import check_spec
from fedscan.common.settings import setting
from fedscan.common.tasks import SEGMENTATION, check_classes, model_task
from fedscan.common.values import Names


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one site's local training in one round."""

    model: str = setting(
        defaults.MODEL,
        help="The model every site trains (default: the task's: small-cnn "
        "for classification, unet for segmentation).",
    )
    learning_rate: float = setting(
        defaults.LEARNING_RATE,
        help="Local SGD learning rate (default: the "
        "task's: 0.05 for classification, 0.1 for segmentation).",
    )
    momentum: float = setting(defaults.MOMENTUM, help="Local SGD momentum, in [0, 1).")
    local_epochs: int = setting(defaults.LOCAL_EPOCHS, help="Local epochs per round at each site.")
    batch_size: int = setting(
        defaults.BATCH_SIZE,
        help="Expected batch size (DP: Poisson sampling rate = batch / training samples).",
    )
    augment: bool = setting(
        True, help="Light label-preserving augmentation (random affine) while training."
    )
    augment_intensity: bool = setting(
        defaults.AUGMENT_INTENSITY,
        omit_default=True,
        help="Also vary each training image as another scanner would (gamma, contrast, "
        "brightness, noise, blur) when augment is on; classification only.",
    )
    augment_views: int = setting(
        defaults.AUGMENT_VIEWS,
        omit_default=True,
        help="Augmentation multiplicity: K augmented views of each training image, their "
        "gradients averaged before DP clipping (still one image's gradient; K× the compute); "
        "classification with augment on.",
    )
    augment_on: str = setting(
        defaults.AUGMENT_ON,
        omit_default=True,
        help="Where augmentation runs: device (batched where the site trains, GPU or CPU) or "
        "loader (per image, MONAI, on the CPU: slower; reproduces seeded runs of fedscan before "
        "2026-12-07).",
    )
    lr_schedule: str = setting(
        defaults.LR_SCHEDULE,
        omit_default=True,
        help="The learning rate over the run's rounds: constant, or cosine (from learning-rate "
        "in round 1 down to a tenth of it in the last round).",
    )
    trainable: str = setting(
        "all",
        omit_default=True,
        help="What the sites train: all, head (the last layer), last:N (the last N layers) or "
        "parameter-name prefixes, comma-separated; the rest stays the global model's and is not "
        "sent back (fine-tuning from --init; fedavg, fedprox or a robust strategy).",
    )
    proximal_mu: float = setting(
        0.0, flat=False, help="FedProx's proximal weight, as the strategy sends it."
    )
    seed: int = setting(
        defaults.SEED, flat=False, help="Shuffling seed without DP (the run's seed)."
    )
    classical: str = setting(
        "",
        help="The classical models' preprocessing and features, e.g. "
        '"median=3,equalize=clahe,roi=otsu,hog-cell=8,lbp-grid=4"; empty: the defaults.',
    )
    task: str = setting(
        "classification",
        help="classification (one 0/1 label per image), multiclass (one of `classes` per "
        "image), multilabel (any subset of `classes`) or segmentation (a mask per image).",
    )
    classes: Names = setting(
        (),
        omit_default=True,
        help="multiclass / multilabel: the class (finding) names, in order; every site checks "
        'its labels against them, e.g. ["normal", "effusion", "nodule"]. Segmentation: a label '
        "map's structures, mask value k the k-th (none: a binary mask).",
    )


def check_training(train: TrainSettings) -> None:
    """Training settings a site can run; ConfigError says which one to change."""
    if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
        raise ConfigError("learning-rate must be a positive number.")
    if train.local_epochs < 1:
        raise ConfigError("local-epochs must be at least 1.")
    if train.batch_size < 1:
        raise ConfigError("batch-size must be at least 1.")
    if not 0 <= train.momentum < 1:
        raise ConfigError("momentum must be in [0, 1).")
    _check_views_and_schedule(train)
    check_spec(train.trainable)
    if train.task not in defaults.TASKS:
        raise ConfigError(f"Unknown task {train.task!r}; use one of {', '.join(defaults.TASKS)}.")
    spec = get_model_spec(train.model)
    if spec.task != model_task(train.task):
        usable = models_for(model_task(train.task))
        raise ConfigError(
            f"Model {train.model!r} does not do task {train.task}; choose one of: "
            f"{', '.join(usable)}."
        )
    check_classes(train.task, train.classes)
    if train.classical:
        from fedscan.common.models.classical import ClassicalConfig

        ClassicalConfig.parse(train.classical)  # raises with the valid keys


def _check_views_and_schedule(train: TrainSettings) -> None:
    if train.lr_schedule not in defaults.LR_SCHEDULES:
        raise ConfigError(
            f"Unknown lr-schedule {train.lr_schedule!r}; use one of "
            f"{', '.join(defaults.LR_SCHEDULES)}."
        )
    if train.augment_on not in defaults.AUGMENT_PLACES:
        raise ConfigError(
            f"Unknown augment-on {train.augment_on!r}; use one of "
            f"{', '.join(defaults.AUGMENT_PLACES)}."
        )
    if not 1 <= train.augment_views <= 16:
        raise ConfigError("augment-views must be 1 to 16 (each view costs a forward and backward).")
    if train.augment_views > 1 and not (train.augment and train.task != SEGMENTATION):
        raise ConfigError(
            "augment-views > 1 averages augmented views of an image: it needs augment = true "
            "and a classification task (binary, multiclass or multilabel), not segmentation."
        )
