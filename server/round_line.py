"""What one line of metrics.jsonl holds beside the sites' own figures (:mod:`fedscan.server.run_log`
writes it when a round closes).

Invariants: a line's figures come from the replies the run log accepted, nothing else; a site that
missed a round keeps its last ε and metric release policy in every later line, so it never vanishes
from the final table or the model card.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flwr.app import Message

from fedscan.common import protocol

Record = dict[str, Any]
_CLASS = (protocol.MACRO_AUC, protocol.BALANCED_ACCURACY)  # multiclass / multilabel site figures


def resident_memory_mb() -> float | None:
    """This process's resident set size now (Linux /proc); None where that is not available."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def weighted_mean(per_site: dict[str, dict[str, float]], key: str) -> float:
    """Example-weighted mean over sites where ``key`` is defined (NaN otherwise)."""
    pairs = [
        (m[key], m[protocol.NUM_EXAMPLES])
        for m in per_site.values()
        if key in m and m[key] is not None and math.isfinite(m[key])
    ]
    total = sum(weight for _, weight in pairs)
    return sum(value * weight for value, weight in pairs) / total if total else math.nan


def aggregated(evaluation: dict[str, dict[str, float]]) -> dict[str, float]:
    """The example-weighted mean of every figure some site reported (the classification ones, NaN,
    when none evaluated), and the images they evaluated on."""
    reported = {key for metrics in evaluation.values() for key in metrics}
    means = {
        key: weighted_mean(evaluation, key)
        for key in (*protocol.CLASSIFICATION_METRICS, *protocol.SEGMENTATION_METRICS, *_CLASS)
        if key in reported or (key in protocol.CLASSIFICATION_METRICS and not evaluation)
    }
    means[protocol.NUM_EXAMPLES] = sum(m[protocol.NUM_EXAMPLES] for m in evaluation.values())
    return means


def carry_forward(record: Record, previous: Record) -> None:
    """Each site's ε spent so far in the run, and its metric releases so far: a site that missed
    this round (dropped, slow to reconnect after a coordinator restart) keeps its last values."""
    record["epsilon"] = {
        **previous.get("epsilon", {}),
        **{name: m.get(protocol.EPSILON) for name, m in record.get("train", {}).items()},
    }
    for key in ("metrics_policy", "metrics_epsilon"):
        found = {**previous.get(key, {}), **record.get(key, {})}
        if found:
            record[key] = found


def note_metric_policy(record: Record, site: str, reply: Message, metrics: Any) -> None:
    """The site's metric release policy for this evaluation (its site record) and its metric ε
    so far in the run, when it says."""
    site_record = reply.content.config_records.get(protocol.SITE)
    policy = site_record.get(protocol.METRICS_POLICY) if site_record is not None else None
    if isinstance(policy, str):
        record.setdefault("metrics_policy", {})[site] = policy
    if protocol.METRICS_EPSILON in metrics:
        record.setdefault("metrics_epsilon", {})[site] = float(metrics[protocol.METRICS_EPSILON])
