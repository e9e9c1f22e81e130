"""TensorBoard event files with a run's scalars (run config ``tensorboard = true``).

The same numbers as metrics.jsonl, under ``RUN_DIR/tensorboard``: pooled
metrics, per-site validation AUC and loss, training loss and ε per site, and
central ε where the run has one. ``tensorboard --logdir runs`` then shows
every run side by side. Written after each round; ``fedscan report RUN_DIR
--tensorboard`` rebuilds them from metrics.jsonl.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedscan.common import protocol
from fedscan.common.errors import ConfigError
from fedscan.server.rundir import EVENTS_DIR

_POOLED = (
    "auc",
    "auc-ci-low",
    "auc-ci-high",
    "ece",
    "accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "dice",
    "iou",
)  # absent keys (the other task's) are left out
_PER_SITE = (
    ("evaluate", protocol.AUC, "auc"),
    ("evaluate", protocol.DICE, "dice"),
    ("evaluate", protocol.HD95, "hd95"),
    ("evaluate", protocol.LOSS, "val_loss"),
    ("train", protocol.TRAIN_LOSS, "train_loss"),
)


def require_tensorboard() -> None:
    """Fail before the run starts, with the fix, when the optional package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "tensorboard = true needs the TensorBoard package: pip install 'fedscan[tensorboard]', "
            "or turn the option off."
        )


def round_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Tag → value for one metrics.jsonl line; undefined values (NaN, no DP's ∞) are left out."""
    pooled = record.get("pooled") or {}
    scalars = {f"pooled/{key}": pooled.get(key) for key in _POOLED}
    for key in ("macro-auc", "micro-auc", "balanced-accuracy", "macro-f1"):  # multi-class runs
        scalars[f"pooled/{key}"] = pooled.get(key)
    for name, found in (pooled.get("classes") or {}).items():  # a class name is not patient data
        scalars[f"class_auc/{name}"] = found.get("auc")
    scalars["mean/val_loss"] = (record.get("aggregated") or {}).get("loss")
    for phase, key, tag in _PER_SITE:
        for site, metrics in record.get(phase, {}).items():
            scalars[f"{tag}/{site}"] = metrics.get(key)
    for site, spent in (record.get("epsilon") or {}).items():
        scalars[f"epsilon/{site}"] = spent
    scalars["epsilon/central"] = record.get("central_epsilon")
    return {
        tag: float(value)
        for tag, value in scalars.items()
        if isinstance(value, (int, float)) and math.isfinite(value)
    }


def write_rounds(run_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Append the scalars of ``records`` (each with its round as the step) to the run's event
    files."""
    from torch.utils.tensorboard import SummaryWriter

    events = Path(run_dir) / EVENTS_DIR
    with SummaryWriter(log_dir=str(events)) as writer:
        for record in records:
            for tag, value in round_scalars(record).items():
                writer.add_scalar(tag, value, global_step=int(record["round"]))
    return events


def rebuild(run_dir: Path, records: list[dict[str, Any]]) -> Path:
    """Event files for every round, replacing any earlier ones (no duplicated steps)."""
    require_tensorboard()
    shutil.rmtree(Path(run_dir) / EVENTS_DIR, ignore_errors=True)
    return write_rounds(run_dir, records)
