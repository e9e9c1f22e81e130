"""The one place that builds what leaves a site — and checks it against an allow-list first.

Only these ever leave: the model arrays after DP training (the same keys and
shapes as the model the coordinator sent, numeric, all finite), scalar
metrics with known names (per model, for the models of a cross-site evaluation), the validation
score histogram (counts and score sums per fixed bin, for pooled metrics) or, for segmentation,
three foreground pixel counts summed over the validation masks (for pooled Dice; a label map
also K × 3 per structure), and a tiny record
naming the site and its fedscan version; for the classical models, per-feature sums and sums of
squares over the site's images (noised under DP); under secure aggregation, instead of the
update, the secure-aggregation messages (public keys, sealed shares, the masked update, shares
of peers' secrets; :mod:`fedscan.common.secagg`). Refusals carry a code and a fixed public reason,
never an exception's text. Audit this file, not the handlers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedscan import __version__
from fedscan import secagg_records as records
from fedscan.common import protocol
from fedscan.common.errors import ReplyRefused, public_reply
from fedscan.common.metrics.binning import COARSE_BINS
from fedscan.common.metrics.histogram import BINS
from fedscan.common.metrics.private import METRIC_POLICIES
from fedscan.common.secagg import KeyAdvert, MaskedInput, ShareBundle, UnmaskAnswer
from fedscan.common.secagg.checks import check_advert
from fedscan.common.tasks import MAX_CLASSES

if TYPE_CHECKING:
    from typing import TypeAlias

    from fedscan.common.metrics.classwise import ClassEvidence
    from fedscan.common.metrics.confusion import LabelOverlaps
    from fedscan.common.metrics.histogram import ScoreHistogram
    from fedscan.common.metrics.private import NoisyEvaluation

    Released: TypeAlias = ScoreHistogram | NoisyEvaluation | ClassEvidence | LabelOverlaps

_ALLOWED_DTYPES = frozenset(
    {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64}
)
Evaluation = tuple[Mapping[str, float], "Released | None"]


def _site_record(site_name: str, metrics_policy: str = "") -> ConfigRecord:
    record: dict[str, Any] = {protocol.SITE_NAME: site_name, protocol.VERSION: __version__}
    if metrics_policy:  # the site's metric release policy applied to this reply's evaluations
        if metrics_policy not in METRIC_POLICIES:
            raise ReplyRefused("Unknown metric release policy.")
        record[protocol.METRICS_POLICY] = metrics_policy
    return ConfigRecord(record)


def _scalars(metrics: Mapping[str, float], allowed: frozenset[str]) -> MetricRecord:
    record: dict[str, int | float | list[int] | list[float]] = {}
    for key, value in metrics.items():
        if key not in allowed:
            raise ReplyRefused(f"Metric {key!r} is not on the allow-list.")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ReplyRefused(f"Metric {key!r} is not a scalar number.")
        record[key] = int(value) if key in protocol.INTEGER_METRICS else float(value)
    return MetricRecord(record)


def _checked_arrays(
    arrays: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> ArrayRecord:
    if set(arrays) != set(expected):
        raise ReplyRefused(
            "The update's parameter names differ from the model the coordinator sent."
        )
    for key, value in arrays.items():
        if value.shape != expected[key].shape:
            raise ReplyRefused(f"Parameter {key!r} changed shape.")
        if value.dtype not in _ALLOWED_DTYPES:
            raise ReplyRefused(
                f"Parameter {key!r} has dtype {value.dtype}, not a model number type."
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ReplyRefused(f"Parameter {key!r} holds NaN or infinity.")
    return ArrayRecord({key: arrays[key] for key in expected})


def train_reply(
    msg: Message,
    arrays: Mapping[str, torch.Tensor],
    metrics: Mapping[str, float],
    site_name: str,
    *,
    expected: Mapping[str, torch.Tensor],
    evaluation: Evaluation | None = None,
    metrics_policy: str = "",
) -> Message:
    """The update and its metrics; ``evaluation``: the received model scored on validation data
    (as the site's metric policy ``metrics_policy`` releases it)."""
    update = {protocol.ARRAYS: _checked_arrays(arrays, expected)}
    return Message(
        content=_train_content(update, metrics, site_name, evaluation, metrics_policy),
        reply_to=msg,
    )


def held_train_reply(
    msg: Message,
    metrics: Mapping[str, float],
    site_name: str,
    advert: KeyAdvert,
    *,
    evaluation: Evaluation | None = None,
    metrics_policy: str = "",
) -> Message:
    """Under secure aggregation: the metrics, the evaluation and the round's two public keys; the
    update stays at the site until it leaves masked (:func:`masked_input_reply`)."""
    keys = {protocol.SECAGG: records.advert_record(check_advert(advert))}
    return Message(
        content=_train_content(keys, metrics, site_name, evaluation, metrics_policy),
        reply_to=msg,
    )


def _train_content(
    lead: Mapping[str, ArrayRecord | ConfigRecord],
    metrics: Mapping[str, float],
    site_name: str,
    evaluation: Evaluation | None,
    policy: str,
) -> RecordDict:
    content = RecordDict(
        {
            **lead,
            protocol.METRICS: _scalars(metrics, protocol.TRAIN_METRICS),
            protocol.SITE: _site_record(site_name, policy),
        }
    )
    if evaluation is not None:
        content[protocol.EVALUATION] = _evaluation_record(*evaluation)
    return content


def share_bundle_reply(msg: Message, bundle: ShareBundle, site_name: str) -> Message:
    """Secure aggregation: the site's Shamir shares, each sealed for one peer (AEAD)."""
    return _secagg_reply(msg, site_name, records.envelopes_record(bundle.envelopes))


def masked_input_reply(msg: Message, masked: MaskedInput, site_name: str) -> Message:
    """Secure aggregation: the update, quantised and masked (uint64 below 2^k): its release."""
    if masked.values.dtype != np.uint64 or masked.values.ndim != 1:
        raise ReplyRefused("A masked input must be one vector of uint64 values.")
    content = RecordDict(
        {
            protocol.SECAGG_MASKED: records.masked_record(masked),
            protocol.SITE: _site_record(site_name),
        }
    )
    return Message(content=content, reply_to=msg)


def unmask_reply(msg: Message, answer: UnmaskAnswer, site_name: str) -> Message:
    """Secure aggregation: per peer one share, of its self-mask seed or of its masking key."""
    return _secagg_reply(msg, site_name, records.answer_record(answer))


def _secagg_reply(msg: Message, site_name: str, record: ConfigRecord) -> Message:
    content = RecordDict({protocol.SECAGG: record, protocol.SITE: _site_record(site_name)})
    return Message(content=content, reply_to=msg)


def _evaluation_record(metrics: Mapping[str, float], histogram: Released | None) -> MetricRecord:
    record = _scalars(metrics, protocol.EVALUATE_METRICS)
    lists = histogram.to_lists() if histogram is not None else {}
    classes, bins = _classes_in(lists)
    for key, values in lists.items():
        record[key] = _histogram_values(key, values, classes, bins)
    return record


def _classes_in(lists: Mapping[str, list]) -> tuple[int, int]:
    """(how many classes per-class evidence covers, its bins); (0, 0) for a binary histogram. Its
    arrays agree: K × BINS (or K × COARSE_BINS, coarse or noised) for K classes."""
    keys: tuple[str, ...] = protocol.CLASS_HISTOGRAM_KEYS
    if protocol.DP_CLASS_HIST_POSITIVES in lists:
        keys = protocol.DP_CLASS_KEYS[:2]
    lengths = {len(lists[key]) for key in keys if key in lists}
    if not lengths:
        return 0, 0
    (length,) = lengths if len(lengths) == 1 else (0,)
    bins = BINS if length % BINS == 0 else COARSE_BINS
    classes, rest = divmod(length, bins)
    if rest or not 1 <= classes <= MAX_CLASSES or set(keys) - set(lists):
        raise ReplyRefused("Per-class histograms must be K × BINS, all of them, for K classes.")
    return classes, bins


def evaluate_reply(
    msg: Message,
    metrics: Mapping[str, float],
    site_name: str,
    *,
    histogram: Released | None = None,
    metrics_policy: str = "",
) -> Message:
    content = RecordDict(
        {
            protocol.METRICS: _evaluation_record(metrics, histogram),
            protocol.SITE: _site_record(site_name, metrics_policy),
        }
    )
    return Message(content=content, reply_to=msg)


def cross_site_reply(
    msg: Message, results: Mapping[str, Evaluation], site_name: str, *, metrics_policy: str = ""
) -> Message:
    """One metric record per model the coordinator sent (named as it named them), nothing else."""
    sent = set(msg.content.array_records)
    if set(results) != sent:
        raise ReplyRefused("Cross-site results must cover exactly the models the coordinator sent.")
    content = RecordDict({protocol.SITE: _site_record(site_name, metrics_policy)})
    for name, (metrics, histogram) in results.items():
        content[name] = _evaluation_record(metrics, histogram)
    return Message(content=content, reply_to=msg)


def _histogram_values(key: str, values: list, classes: int = 0, bins: int = BINS) -> list:
    """Per-bin counts (integers ≥ 0) or score sums (finite floats): BINS (or COARSE_BINS) of them,
    K × BINS per class histogram, K × K confusion counts, K × 3 label-map overlap counts; noisy
    coarse counts under DP (finite floats, COARSE_BINS)."""
    binary = COARSE_BINS if len(values) == COARSE_BINS else BINS
    expected = {
        **{name: binary for name in protocol.HISTOGRAM_KEYS},
        **{name: COARSE_BINS for name in protocol.DP_HISTOGRAM_KEYS},
        **{name: classes * bins for name in protocol.CLASS_HISTOGRAM_KEYS},
        **{name: classes * COARSE_BINS for name in protocol.DP_CLASS_KEYS[:2]},
        protocol.CONFUSION_MATRIX: classes * classes,
        protocol.DP_CONFUSION_MATRIX: classes * classes,
        protocol.DP_SEG_COUNTS: 4,
        protocol.DP_LABEL_OVERLAPS: _label_map_length(len(values) - 1) + 1,  # and the count
        protocol.LABEL_OVERLAPS: _label_map_length(len(values)),
    }
    if key not in expected or len(values) != expected[key] or not values:
        raise ReplyRefused(f"Histogram {key!r} is not on the allow-list or has the wrong length.")
    if key in (protocol.HIST_SCORE_SUMS, protocol.CLASS_HIST_SCORE_SUMS, *protocol.DP_LIST_KEYS):
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            raise ReplyRefused("Histogram score sums and noisy counts must be finite floats.")
        return [float(v) for v in values]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ReplyRefused(f"Histogram {key!r} must hold non-negative integer counts.")
    return [int(v) for v in values]


def _label_map_length(counts: int) -> int:
    """``counts`` when it is 3 × K for 2 ≤ K ≤ MAX_CLASSES structures (a label map's overlap
    counts), else -1 (no length matches)."""
    structures, rest = divmod(counts, 3)
    return -1 if rest or not 2 <= structures <= MAX_CLASSES else counts


def error_reply(msg: Message, code: str) -> Message:
    """A coded refusal: the registry's number and public reason for ``code``, nothing else."""
    code, number, reason = public_reply(code)
    return Message(error=Error(code=number, reason=f"{code}: {reason}"), reply_to=msg)


def feature_stats_reply(
    msg: Message, sums: Mapping[str, torch.Tensor], count: int, site_name: str, *, dimension: int
) -> Message:
    """Per-feature sums and sums of squares (noised under DP) and the image count: never a feature
    vector."""
    if set(sums) != set(protocol.STATS_ARRAYS):
        raise ReplyRefused("Feature statistics must be exactly the sums and the sums of squares.")
    for key, value in sums.items():
        if (
            value.shape != (dimension,)
            or not value.is_floating_point()
            or not bool(torch.isfinite(value).all())
        ):
            raise ReplyRefused(f"Feature statistic {key!r} must be {dimension} finite numbers.")
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(dict(sums)),
            protocol.METRICS: _scalars({protocol.NUM_EXAMPLES: count}, protocol.TRAIN_METRICS),
            protocol.SITE: _site_record(site_name),
        }
    )
    return Message(content=content, reply_to=msg)
