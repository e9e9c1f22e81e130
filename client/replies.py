"""The one place that builds what leaves a site — and checks it against an allow-list first.

Only these ever leave: the model arrays after DP training (the same keys and
shapes as the model the coordinator sent, numeric, all finite), scalar
metrics with known names (per model, for the models of a cross-site evaluation), the validation score histogram (counts and score
sums per fixed bin, for pooled metrics) or, for segmentation, three foreground pixel counts summed over
the validation masks (for pooled Dice), and a tiny record naming the site
and its fedscan version; for the classical models, per-feature sums and sums of squares over the site's
images (noised under DP). Refusals carry a code and a fixed public reason, never an
exception's text. Audit this file, not the handlers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedscan import __version__
from fedscan.common.compat import VERSION_KEY
from fedscan.common.config import EVALUATION_RECORD
from fedscan.common.errors import public_reply
from fedscan.common.metrics import METRIC_NAMES
from fedscan.common.pooled import BINS, ScoreHistogram
from fedscan.common.segmentation import COUNT_KEYS, SEGMENTATION_METRICS

SITE_RECORD = "site"
# site-seconds: how long the handler took at the site (load + train / evaluate), for round-overhead figures.
TRAIN_METRICS = frozenset({"num-examples", "train-loss", "steps", "noise-multiplier", "epsilon", "site-seconds"})
HISTOGRAM_KEYS = frozenset({"hist-pos", "hist-neg", "hist-score-sum"})
_ALLOWED_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64})
STATS_ARRAYS = ("sum", "squares")  # the classical models' feature statistics (common/feature_stats.py)
EVALUATE_METRICS = frozenset({"num-examples", "precision", "positives", "site-seconds", *METRIC_NAMES,
                              *SEGMENTATION_METRICS, *COUNT_KEYS})


class ReplyRefused(Exception):
    """A reply failed the allow-list: a programming error, caught before anything is sent."""


def _site_record(site_name: str) -> ConfigRecord:
    return ConfigRecord({"name": site_name, VERSION_KEY: __version__})


def _scalars(metrics: Mapping[str, float], allowed: frozenset[str]) -> MetricRecord:
    record = {}
    for key, value in metrics.items():
        if key not in allowed:
            raise ReplyRefused(f"Metric {key!r} is not on the allow-list.")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ReplyRefused(f"Metric {key!r} is not a scalar number.")
        record[key] = int(value) if key in ("num-examples", "steps") else float(value)
    return MetricRecord(record)


def _checked_arrays(arrays: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> ArrayRecord:
    if set(arrays) != set(expected):
        raise ReplyRefused("The update's parameter names differ from the model the coordinator sent.")
    for key, value in arrays.items():
        if value.shape != expected[key].shape:
            raise ReplyRefused(f"Parameter {key!r} changed shape.")
        if value.dtype not in _ALLOWED_DTYPES:
            raise ReplyRefused(f"Parameter {key!r} has dtype {value.dtype}, not a model number type.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ReplyRefused(f"Parameter {key!r} holds NaN or infinity.")
    return ArrayRecord({key: arrays[key] for key in expected})


def train_reply(msg: Message, arrays: Mapping[str, torch.Tensor], metrics: Mapping[str, float], site_name: str,
                *, expected: Mapping[str, torch.Tensor],
                evaluation: tuple[Mapping[str, float], ScoreHistogram | None] | None = None) -> Message:
    """The update and its metrics; ``evaluation``: the received model scored on validation data."""
    content = RecordDict({"arrays": _checked_arrays(arrays, expected), "metrics": _scalars(metrics, TRAIN_METRICS),
                          SITE_RECORD: _site_record(site_name)})
    if evaluation is not None:
        content[EVALUATION_RECORD] = _evaluation_record(*evaluation)
    return Message(content=content, reply_to=msg)


def _evaluation_record(metrics: Mapping[str, float], histogram: ScoreHistogram | None) -> MetricRecord:
    record = _scalars(metrics, EVALUATE_METRICS)
    for key, values in (histogram.to_lists() if histogram is not None else {}).items():
        record[key] = _histogram_values(key, values)
    return record


def evaluate_reply(msg: Message, metrics: Mapping[str, float], site_name: str, *,
                   histogram: Mapping[str, list] | None = None) -> Message:
    record = _scalars(metrics, EVALUATE_METRICS)
    for key, values in (histogram or {}).items():
        record[key] = _histogram_values(key, values)
    content = RecordDict({"metrics": record, SITE_RECORD: _site_record(site_name)})
    return Message(content=content, reply_to=msg)


def cross_site_reply(msg: Message, results: Mapping[str, tuple[Mapping[str, float], ScoreHistogram]],
                     site_name: str) -> Message:
    """One metric record per model the coordinator sent (named as it named them), nothing else."""
    sent = set(msg.content.array_records)
    if set(results) != sent:
        raise ReplyRefused("Cross-site results must cover exactly the models the coordinator sent.")
    content = RecordDict({SITE_RECORD: _site_record(site_name)})
    for name, (metrics, histogram) in results.items():
        content[name] = _evaluation_record(metrics, histogram)
    return Message(content=content, reply_to=msg)


def _histogram_values(key: str, values: list) -> list:
    """Per-bin counts (integers ≥ 0) or score sums (finite floats), exactly BINS of them."""
    if key not in HISTOGRAM_KEYS or len(values) != BINS:
        raise ReplyRefused(f"Histogram {key!r} is not on the allow-list or has the wrong length.")
    if key == "hist-score-sum":
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            raise ReplyRefused("Histogram score sums must be finite floats.")
        return [float(v) for v in values]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ReplyRefused(f"Histogram {key!r} must hold non-negative integer counts.")
    return [int(v) for v in values]


def error_reply(msg: Message, code: str) -> Message:
    """A coded refusal: the registry's number and public reason for ``code``, nothing else."""
    code, number, reason = public_reply(code)
    return Message(error=Error(code=number, reason=f"{code}: {reason}"), reply_to=msg)


def feature_stats_reply(msg: Message, sums: Mapping[str, torch.Tensor], count: int, site_name: str, *,
                        dimension: int) -> Message:
    """Per-feature sums and sums of squares (noised under DP) and the image count: never a feature vector."""
    if set(sums) != set(STATS_ARRAYS):
        raise ReplyRefused("Feature statistics must be exactly the sums and the sums of squares.")
    for key, value in sums.items():
        if value.shape != (dimension,) or not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ReplyRefused(f"Feature statistic {key!r} must be {dimension} finite numbers.")
    content = RecordDict({"arrays": ArrayRecord(dict(sums)), "metrics": _scalars({"num-examples": count},
                                                                                    TRAIN_METRICS),
                          SITE_RECORD: _site_record(site_name)})
    return Message(content=content, reply_to=msg)
