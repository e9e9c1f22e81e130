"""Collects each round's per-site replies, writes metrics.jsonl and the global model."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message

from fedscan.common.compat import VERSION_KEY, check_compatible
from fedscan.common.config import EVALUATION_RECORD
from fedscan.common.errors import FedscanError, VersionMismatchError
from fedscan.common.metrics import METRIC_NAMES
from fedscan.common.pooled import ScoreHistogram, pooled_metrics, youden_threshold
from fedscan.common.segmentation import COUNT_KEYS, SEGMENTATION_METRICS, OverlapCounts, pooled_overlap
from fedscan.server.gate import Candidate, UpdateGate
from fedscan.server.rundir import RunDirectory

log = logging.getLogger(__name__)

def reported_site_name(reply: Message) -> str | None:
    """The name a site gave in its reply (error replies carry none)."""
    record = reply.content.config_records.get("site") if not reply.has_error() else None
    return str(record["name"]) if record and "name" in record else None


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
    pairs = [(m[key], m["num-examples"]) for m in per_site.values()
             if key in m and m[key] is not None and math.isfinite(m[key])]
    total = sum(weight for _, weight in pairs)
    return sum(value * weight for value, weight in pairs) / total if total else math.nan


@dataclass
class RoundRecorder:
    """Mutable per-run log, owned by the strategy of one run."""

    run_dir: RunDirectory
    model_name: str
    min_sites: int = 1
    central_epsilon: float | None = None  # set by the central-DP strategy after each release
    threshold: float = 0.5  # Youden-optimal on the pooled validation histogram of the latest round
    tensorboard: bool = False  # also append each round's scalars to TensorBoard event files
    gate: UpdateGate = field(default_factory=UpdateGate)
    model_options: str = ""  # run config ``classical``: rebuilds a classical model from its checkpoint
    _sent: dict[str, Any] | None = None  # the global model of the current round, for the gate
    started: float = field(default_factory=time.monotonic)
    history: list[dict[str, Any]] = field(default_factory=list)
    _current: dict[str, Any] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)  # node id → name the site reported
    _histograms: dict[str, ScoreHistogram] = field(default_factory=dict)
    _overlaps: dict[str, OverlapCounts] = field(default_factory=dict)  # segmentation: pixel counts per site

    def site_name(self, reply: Message) -> str:
        node = reply.metadata.src_node_id
        reported = reported_site_name(reply)
        if reported is not None:
            self._names[node] = reported
        return self._names.get(node, f"node-{node}")

    def accept(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        """Keep replies from compatible sites; note every refusal with its reason."""
        accepted = []
        self._current.setdefault("round", server_round)
        record = self._current
        for reply in sorted(replies, key=self.site_name):  # by site, not by arrival
            name = self.site_name(reply)
            if reply.has_error():
                self._refusal(record, phase, name, reply.error.reason)
                continue
            try:
                check_compatible(reply.content["site"].get(VERSION_KEY) if "site" in reply.content else None)
            except VersionMismatchError as error:
                self._refusal(record, phase, name, f"version-mismatch: {error}")
                continue
            metric_record = next(iter(reply.content.metric_records.values()))
            if phase == "evaluate" and not self._take_histogram(record, name, metric_record):
                continue
            accepted.append(reply)
        if phase == "train":
            accepted = self._through_gate(record, accepted)
        for reply in accepted:
            record.setdefault(phase, {})[self.site_name(reply)] = dict(next(iter(reply.content.metric_records.values())))
        if phase == "train" and len(accepted) < self.min_sites:
            self._end_without_quorum(server_round, len(accepted))
        return accepted

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue this log seamlessly (JSON-safe)."""
        return {"history": self.history, "current": self._current, "threshold": self.threshold,
                "names": {str(node): name for node, name in self._names.items()},
                "central_epsilon": self.central_epsilon, "declared": dict(self.gate.declared),
                "elapsed_s": time.monotonic() - self.started}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from :meth:`snapshot`; metrics.jsonl is rewritten to exactly its history, so rounds
        logged after that checkpoint (and about to be redone) are not listed twice."""
        self.history, self._current = list(snapshot["history"]), dict(snapshot["current"])
        self.threshold, self.central_epsilon = float(snapshot["threshold"]), snapshot["central_epsilon"]
        self._names = {int(node): name for node, name in snapshot["names"].items()}
        self.gate.declared = {site: int(count) for site, count in snapshot["declared"].items()}
        self.started = time.monotonic() - float(snapshot["elapsed_s"])
        self.run_dir.rewrite_metrics(self.history)
        if self.tensorboard:  # event files may hold rounds that will be redone
            from fedscan.server.tensorboard import rebuild

            rebuild(self.run_dir.path, self.history)

    def expect(self, arrays: ArrayRecord) -> None:
        """The global model this round's train messages carry: what the gate checks updates against."""
        self._sent = {key: value.numpy() for key, value in arrays.to_torch_state_dict().items()}

    def _through_gate(self, record: dict[str, Any], replies: list[Message]) -> list[Message]:
        """Drop (and note) updates the sanity gate refuses; before any aggregation sees them."""
        if self._sent is None:
            return replies
        candidates = [Candidate(self.site_name(reply), {k: v.numpy() for k, v in
                                                        reply.content["arrays"].to_torch_state_dict().items()},
                                int(next(iter(reply.content.metric_records.values())).get("num-examples", 0)))
                      for reply in replies]
        refused = self.gate.refusals(candidates, self._sent)
        for site, reason in refused.items():
            self._refusal(record, "train", site, f"update-rejected: {reason}")
        return [reply for reply in replies if self.site_name(reply) not in refused]

    def take_evaluations(self, evaluated_round: int, replies: list[Message]) -> None:
        """Move the evaluations riding on train replies (of ``evaluated_round``'s aggregate) out of them,
        into that round's record, and close the round. Flower's aggregation then sees plain train replies."""
        record = self._current
        record.setdefault("round", evaluated_round)
        for reply in sorted(replies, key=self.site_name):
            if reply.has_error() or EVALUATION_RECORD not in reply.content:
                continue
            metrics = reply.content.metric_records[EVALUATION_RECORD]
            del reply.content[EVALUATION_RECORD]
            name = self.site_name(reply)
            if self._take_histogram(record, name, metrics):
                record.setdefault("evaluate", {})[name] = dict(metrics)
        self.round_done(evaluated_round)

    def _end_without_quorum(self, server_round: int, trained: int) -> None:
        """Fewer sites than min-sites trained: record the round with its refusals, then stop the run."""
        record, self._current = self._current, {}
        record["elapsed_s"] = round(time.monotonic() - self.started, 2)
        self.run_dir.append_metrics(record)
        self.history.append(record)
        refused = "; ".join(f"{r['site']}: {r['reason']}" for r in record.get("refusals", []))
        raise FedscanError(f"Round {server_round}: only {trained} of the required {self.min_sites} sites "
                           f"trained ({refused or 'no replies'}).", code="quorum-lost")

    def _take_histogram(self, record: dict[str, Any], name: str, metrics: Any) -> bool:
        """Move a site's score histogram out of its reply's metrics (into histograms.json, pooled),
        so the strategy's metric averaging and Flower's logs never see 3 000 numbers per site. Segmentation
        overlap counts are moved out the same way."""
        if not self._take_overlap(record, name, metrics):
            return False
        lists = {key: metrics.pop(key) for key in ("hist-pos", "hist-neg", "hist-score-sum") if key in metrics}
        if not lists:
            return True
        try:
            self._histograms[name] = ScoreHistogram.from_lists(lists)
        except (KeyError, ValueError) as error:
            self._refusal(record, "evaluate", name, f"malformed-histogram: {error}")
            return False
        return True

    def _take_overlap(self, record: dict[str, Any], name: str, metrics: Any) -> bool:
        counts = {key: metrics.pop(key) for key in COUNT_KEYS if key in metrics}
        if not counts:
            return True
        try:
            self._overlaps[name] = OverlapCounts.from_metrics(counts)
        except (KeyError, ValueError, TypeError) as error:
            self._refusal(record, "evaluate", name, f"malformed-overlap-counts: {error}")
            return False
        return True

    def _pool(self, record: dict[str, Any]) -> None:
        """Pooled validation metrics of this round: Dice and IoU from the sites' summed overlap counts, or
        classification metrics at the threshold chosen on the pooled histogram."""
        overlaps, self._overlaps = self._overlaps, {}
        if overlaps:
            images = sum(int(m.get("num-examples", 0)) for m in record.get("evaluate", {}).values())
            record["pooled"] = pooled_overlap(sum(overlaps.values(), OverlapCounts()), images)
        histograms, self._histograms = self._histograms, {}
        if not histograms:
            return
        pooled = sum(histograms.values(), ScoreHistogram.empty(next(iter(histograms.values())).bins))
        self.threshold = youden_threshold(pooled)
        record["pooled"] = pooled_metrics(pooled, self.threshold)
        self.run_dir.write_json("histograms.json", {
            "round": record["round"], "threshold": self.threshold, "pooled": pooled.to_lists(),
            "sites": {name: hist.to_lists() for name, hist in sorted(histograms.items())}})

    @staticmethod
    def _refusal(record: dict[str, Any], phase: str, name: str, reason: str) -> None:
        log.warning("Site %s refused %s: %s", name, phase, reason)
        record.setdefault("refusals", []).append({"site": name, "phase": phase, "reason": reason})

    def train_done(self, server_round: int, arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            self.run_dir.save_model("global", self.model_name, arrays.to_torch_state_dict(),
                                    classical=self.model_options,
                                    round=server_round)

    def round_done(self, server_round: int) -> dict[str, Any]:
        record, self._current = self._current, {}
        record["round"] = server_round
        evaluation = record.get("evaluate", {})
        reported = {key for metrics in evaluation.values() for key in metrics}
        record["aggregated"] = {key: weighted_mean(evaluation, key) for key in (*METRIC_NAMES, *SEGMENTATION_METRICS)
                                if key in reported or (key in METRIC_NAMES and not evaluation)}
        record["aggregated"]["num-examples"] = sum(m["num-examples"] for m in evaluation.values())
        self._pool(record)
        record["epsilon"] = {name: m.get("epsilon") for name, m in record.get("train", {}).items()}
        if self.central_epsilon is not None:
            record["central_epsilon"] = self.central_epsilon
        record["elapsed_s"] = round(time.monotonic() - self.started, 2)
        record["coordinator_rss_mb"] = resident_memory_mb()  # a leak shows here long before it hurts
        self.run_dir.append_metrics(record)
        self.history.append(record)
        if self.tensorboard:
            self._write_events(record)
        return record

    def _write_events(self, record: dict[str, Any]) -> None:
        from fedscan.server.tensorboard import write_rounds

        try:
            write_rounds(self.run_dir.path, [record])
        except Exception:  # noqa: BLE001 - metrics.jsonl has the round; `fedscan report --tensorboard` rebuilds
            log.exception("Could not write TensorBoard events for round %s", record.get("round"))
