"""The run log: each round's per-site results, refusals and pooled metrics, in metrics.jsonl and
beyond.

One :class:`RunLog` per run, owned by the run's strategy. Replies pass through triage
(:mod:`fedscan.server.triage`) and, for training, the update gate
(:mod:`fedscan.server.update_check`) before any aggregation sees them; evaluations give up their
histograms or counts to the round's pool (:mod:`fedscan.server.pooling`). When a round closes, one
line is appended to metrics.jsonl (and to TensorBoard when asked): per-site train and validation
metrics, ε per site, the example-weighted mean, the pooled metrics and every refusal. Fewer than
``min_sites`` trained sites end the run, with the round and its refusals logged first. Phases that
missed a site they needed leave a :class:`~fedscan.server.coverage.Gap` in :attr:`RunLog.gaps` (the
run then ends ``completed-with-gaps``). :meth:`RunLog.snapshot` is what a resumed run needs to
continue the log seamlessly, gaps included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, Message

from fedscan.common import protocol
from fedscan.common.errors import ErrorCode, FedscanError
from fedscan.common.tasks import LabelScheme
from fedscan.server.coverage import Gap, final_evaluation_gap, node_name
from fedscan.server.pooling import RoundPool
from fedscan.server.round_line import (
    Record,
    aggregated,
    carry_forward,
    note_metric_policy,
    resident_memory_mb,
)
from fedscan.server.rundir import HISTOGRAMS_FILE, RunDirectory
from fedscan.server.triage import Refusal, SiteNames, first_metrics, triage
from fedscan.server.update_check import UpdateCheck

log = logging.getLogger(__name__)


def _pixels(model: str) -> int:
    """Pixels (voxels) of one validation image: the model's input, as every site resizes to it."""
    from fedscan.common.models.registry import get_model_spec

    spec = get_model_spec(model)
    return spec.input_size * spec.input_size * max(spec.depth, 1)


@dataclass
class RunLog:
    """Mutable per-run log, owned by the strategy of one run."""

    run_dir: RunDirectory
    model_name: str
    min_sites: int = 1
    central_epsilon: float | None = None  # set by the central-DP strategy after each release
    threshold: float = 0.5  # Youden-optimal on the pooled validation histogram of the latest round
    tensorboard: bool = False  # also append each round's scalars to TensorBoard event files
    check: UpdateCheck = field(default_factory=UpdateCheck)  # the gate; ``trainable``'s subset
    model_options: str = (
        ""  # run config ``classical``: rebuilds a classical model from its checkpoint
    )
    names: SiteNames = field(default_factory=SiteNames)
    started: float = field(default_factory=time.monotonic)
    history: list[Record] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)  # phases that missed sites they needed
    _train_started: float = field(default_factory=time.monotonic)
    _current: Record = field(default_factory=dict)
    scheme: LabelScheme | None = None  # multiclass / multilabel: pooled per class
    operating_point: str = "youden"  # the run config's rule for the stored threshold
    calibration: dict[str, Any] | None = None  # Platt map of the latest pooled validation
    _pool: RoundPool = field(default_factory=RoundPool)

    def __post_init__(self) -> None:
        pixels = _pixels(self.model_name)
        self._pool = RoundPool(
            scheme=self.scheme, operating_point=self.operating_point, pixels=pixels
        )

    @property
    def class_meta(self) -> dict[str, Any]:
        """What a multiclass or multilabel checkpoint records beside its weights: the task, the
        class list (its head's order) and, multilabel, each finding's pooled threshold; nothing for
        a binary or segmentation run (its checkpoints stay as they were)."""
        if self.scheme is None:
            return {}
        meta: dict[str, Any] = {"task": self.scheme.kind, "classes": list(self.scheme.classes)}
        if self._pool.class_thresholds:
            meta["thresholds"] = dict(self._pool.class_thresholds)
        return meta

    @property
    def trained(self) -> int:
        """How many sites' updates the round being logged counts (after its aggregation)."""
        return len(self._current.get("train", {}))

    def site_name(self, reply: Message) -> str:
        return self.names.of(reply)

    def note(self, record: Record, refusals: Iterable[Refusal]) -> None:
        """Add ``refusals`` to the round's record (which lists refusals only when it has some)."""
        for refusal in refusals:
            record.setdefault("refusals", []).append(refusal.to_json())

    def accept(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        """Keep replies from compatible sites; note every refusal with its reason."""
        record = self._current
        record.setdefault("round", server_round)
        accepted, refusals = triage(replies, self.names, phase)
        self.note(record, refusals)
        if phase == "evaluate":
            accepted = [
                reply
                for reply in accepted
                if self._pooled(record, reply, reply.content.metric_records[protocol.METRICS])
            ]
        if phase == "train":
            refusals = self.check.refusals(accepted, self.names)
            self.note(record, refusals)  # before any aggregation sees an update
            refused = {refusal.site for refusal in refusals}
            accepted = [reply for reply in accepted if self.site_name(reply) not in refused]
            # The round's own train exchange (send, the sites' work, replies): what the live
            # table shows per round; elapsed_s stays the run's clock.
            record["train_s"] = round(time.monotonic() - self._train_started, 2)
        for reply in accepted:
            record.setdefault(phase, {})[self.site_name(reply)] = first_metrics(reply)
        if phase == "train" and len(accepted) < self.min_sites:
            self._end_without_quorum(server_round, len(accepted))
        return accepted

    def _pooled(self, record: Record, reply: Message, metrics: Any) -> bool:
        """Hand a site's histogram or counts to the round's pool; False (and a refusal) when
        malformed."""
        site = self.site_name(reply)
        note_metric_policy(record, site, reply, metrics)
        problem = self._pool.take(site, metrics)
        if problem is not None:
            log.warning("Site %s refused evaluate: %s", site, problem)
            self.note(record, [Refusal(site, "evaluate", problem)])
        return problem is None

    def snapshot(self) -> Record:
        """Everything a resumed run needs to continue this log seamlessly (JSON-safe)."""
        return {
            "history": self.history,
            "current": self._current,
            "threshold": self.threshold,
            "calibration": self.calibration,
            "names": {str(node): name for node, name in self.names.names.items()},
            "central_epsilon": self.central_epsilon,
            "declared": dict(self.check.gate.declared),
            "elapsed_s": time.monotonic() - self.started,
            "gaps": [gap.to_json() for gap in self.gaps],
        }

    def restore(self, snapshot: Record) -> None:
        """Continue from :meth:`snapshot`; metrics.jsonl is rewritten to exactly its history, so
        rounds logged after that checkpoint (and about to be redone) are not listed twice."""
        self.history, self._current = list(snapshot["history"]), dict(snapshot["current"])
        self.threshold, self.central_epsilon = (
            float(snapshot["threshold"]),
            snapshot["central_epsilon"],
        )
        self.calibration = snapshot.get("calibration")  # none in checkpoints before issue 21
        self.names.names = {int(node): name for node, name in snapshot["names"].items()}
        self.check.gate.declared = {
            site: int(count) for site, count in snapshot["declared"].items()
        }
        self.started = time.monotonic() - float(snapshot["elapsed_s"])
        # Checkpoints written before gaps were recorded have none.
        self.gaps = [Gap.from_json(gap) for gap in snapshot.get("gaps", [])]
        self.run_dir.rewrite_metrics(self.history)
        if self.tensorboard:  # event files may hold rounds that will be redone
            from fedscan.server.tensorboard import rebuild

            rebuild(self.run_dir.path, self.history)

    def expect(self, arrays: ArrayRecord) -> None:
        """The global model this round's train messages carry: what the gate checks updates
        against."""
        self.check.expect(arrays)
        self._train_started = time.monotonic()

    def completed(self, aggregate: ArrayRecord | None) -> ArrayRecord | None:
        """The new global model (the aggregate, made whole when sites trained a subset)."""
        return self.check.completed(aggregate)

    def secure_aggregated(self, summary: Record) -> None:
        """The round's secure-aggregation exchanges (who was summed, who dropped): their wall
        time joins the round's train time."""
        self._current["secure_aggregation"] = summary
        self._current["train_s"] = round(time.monotonic() - self._train_started, 2)

    def take_evaluations(self, evaluated_round: int, replies: list[Message]) -> None:
        """Move the evaluations riding on train replies (of ``evaluated_round``'s aggregate) out of
        them, into that round's record, and close the round. Flower's aggregation then sees plain
        train replies."""
        record = self._current
        record.setdefault("round", evaluated_round)
        for reply in sorted(replies, key=self.site_name):
            if reply.has_error() or protocol.EVALUATION not in reply.content:
                continue
            metrics = reply.content.metric_records[protocol.EVALUATION]
            del reply.content[protocol.EVALUATION]
            if self._pooled(record, reply, metrics):
                record.setdefault("evaluate", {})[self.site_name(reply)] = dict(metrics)
        self.round_done(evaluated_round)

    def _end_without_quorum(self, server_round: int, trained: int) -> None:
        """Fewer sites than min-sites trained: record the round with its refusals, then stop the
        run."""
        record, self._current = self._current, {}
        record["elapsed_s"] = round(time.monotonic() - self.started, 2)
        self.run_dir.append_metrics(record)
        self.history.append(record)
        refused = "; ".join(f"{r['site']}: {r['reason']}" for r in record.get("refusals", []))
        raise FedscanError(
            f"Round {server_round}: only {trained} of the required {self.min_sites} sites "
            f"trained ({refused or 'no replies'}).",
            code=ErrorCode.QUORUM_LOST,
        )

    def check_final_evaluation(self, addressed: list[int], timeout_s: float) -> None:
        """A gap when the final evaluation (the last record) missed a site it was sent to or a
        site that trained in the last round."""
        if not self.history:
            return
        record = self.history[-1]
        sent = [node_name(self.names, node) for node in addressed]
        gap = final_evaluation_gap(record, [*sent, *record.get("train", {})], sent, timeout_s)
        if gap is not None:
            log.warning("The run has a gap: %s", gap.sentence())
            self.gaps.append(gap)

    def train_done(self, server_round: int, arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            self.run_dir.save_model(
                "global",
                self.model_name,
                arrays.to_torch_state_dict(),
                classical=self.model_options,
                round=server_round,
                **self.class_meta,
            )

    def round_done(self, server_round: int) -> Record:
        record, self._current = self._current, {}
        record["round"] = server_round
        record["aggregated"] = aggregated(record.get("evaluate", {}))
        self._close_pool(record, record["aggregated"][protocol.NUM_EXAMPLES])
        carry_forward(record, self.history[-1] if self.history else {})
        if self.central_epsilon is not None:
            record["central_epsilon"] = self.central_epsilon
        record["elapsed_s"] = round(time.monotonic() - self.started, 2)
        record["coordinator_rss_mb"] = resident_memory_mb()  # a leak shows here before it hurts
        self.run_dir.append_metrics(record)
        self.history.append(record)
        if self.tensorboard:
            self._write_events(record)
        return record

    def _close_pool(self, record: Record, images: int) -> None:
        pooled, threshold, histograms = self._pool.close(images)
        if pooled is not None:
            record["pooled"] = pooled
        if threshold is not None:
            self.threshold = threshold
        if histograms is not None:
            self.calibration = histograms.get("calibration")
            self.run_dir.write_json(HISTOGRAMS_FILE, {"round": record["round"], **histograms})

    def _write_events(self, record: Record) -> None:
        from fedscan.server.tensorboard import write_rounds

        try:
            write_rounds(self.run_dir.path, [record])
        except (
            Exception
        ):  # metrics.jsonl has the round; `fedscan report --tensorboard` rebuilds the events
            log.exception("Could not write TensorBoard events for round %s", record.get("round"))
