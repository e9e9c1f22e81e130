"""Strategies by name, each recording its rounds: FedAvg (default), FedProx, FedAdam, FedAvgM,
FedAvg + central DP, and the robust median, trimmed mean and Multi-Krum (Flower's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    MultiKrum,
    Strategy,
)

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.privacy import epsilon_spent
from fedscan.server.inprocess import instruction
from fedscan.server.run_log import RunLog

_WEIGHT = protocol.NUM_EXAMPLES  # the weight key of every strategy built here (one reply: 1)


class RecordingMixin:
    """Filters replies through the run_log before Flower's aggregation runs."""

    run_log: RunLog

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = self._accepted(server_round, "train", replies)
        arrays, metrics = super().aggregate_train(server_round, accepted)  # type: ignore[misc]
        arrays = self.run_log.completed(arrays)
        self.run_log.train_done(server_round, arrays)
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        accepted = self._accepted(server_round, "evaluate", replies)
        comparable = _comparable(accepted)
        metrics = (
            super().aggregate_evaluate(server_round, comparable)  # type: ignore[misc]
            if comparable
            else None
        )
        self.run_log.round_done(server_round)
        return metrics

    def _accepted(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        return self.run_log.accept(server_round, phase, replies)

    def aggregate_mean(
        self, server_round: int, mean: ArrayRecord, *, summed: int
    ) -> ArrayRecord | None:
        """The new global model from a securely aggregated weighted mean of ``summed`` sites'
        updates (their replies were accepted already): handed to the strategy's own aggregation
        as its one reply, so FedAvg and FedProx keep it and FedAdam steps its server optimiser
        towards it."""
        content = RecordDict({protocol.ARRAYS: mean, protocol.METRICS: MetricRecord({_WEIGHT: 1})})
        reply = instruction(content, MessageType.TRAIN)
        arrays, _ = super().aggregate_train(server_round, [reply])  # type: ignore[misc]
        self.run_log.train_done(server_round, arrays)
        return arrays

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
        """(JSON-safe scalars, named groups of tensors) a resumed run needs; stateless strategies
        have none."""
        return {}, {}

    def restore_state(
        self, scalars: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        """Inverse of :meth:`checkpoint_state`."""


def _comparable(replies: list[Message]) -> list[Message]:
    """Evaluation replies Flower can average: withheld ones left out (a site's metric policy; no
    figures) and the rest cut to the keys they share (a ``dp`` site also reports its metric ε, a
    ``coarse`` one does not). Flower refuses records whose keys differ, and its averages are a
    summary only: the pooled figures come from the sites' histograms or counts (RoundPool)."""
    records = [
        reply.content.metric_records[protocol.METRICS]
        for reply in replies
        if protocol.METRICS in reply.content.metric_records
        and not reply.content.metric_records[protocol.METRICS].get(protocol.METRICS_WITHHELD)
    ]
    if not records:
        return []
    shared = set.intersection(*(set(record.keys()) for record in records))
    return [
        instruction(
            RecordDict({protocol.METRICS: MetricRecord({k: record[k] for k in sorted(shared)})}),
            MessageType.EVALUATE,
        )
        for record in records
    ]


class RecordingFedAvg(RecordingMixin, FedAvg):
    """FedAvg that records per-site results."""


class RecordingFedProx(RecordingMixin, FedProx):
    """FedProx that records per-site results (sites apply the proximal step)."""


class RecordingFedAdam(RecordingMixin, FedAdam):
    """FedAdam (server-side Adam on the averaged update) that records per-site results."""

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
        # The server optimiser's first and second moments; the current arrays come with each round.
        moments = {
            name: {k: torch.from_numpy(np.array(v)) for k, v in getattr(self, name).items()}
            for name in ("m_t", "v_t")
            if getattr(self, name, None)
        }
        return {}, moments

    def restore_state(
        self, scalars: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        for name, values in tensors.items():
            setattr(self, name, {k: v.numpy() for k, v in values.items()})


class RecordingFedAvgM(RecordingMixin, FedAvgM):
    """FedAvg with server momentum (Hsu et al. 2019): the global model steps by the averaged
    update plus β × the previous step, at no privacy cost (it only post-processes releases)."""

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
        # The momentum vector; the current arrays come back with the resumed round's model.
        if self.momentum_vector is None:
            return {}, {}
        steps = {str(i): torch.from_numpy(np.array(v)) for i, v in enumerate(self.momentum_vector)}
        return {}, {"momentum_vector": steps}

    def restore_state(
        self, scalars: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        steps = tensors.get("momentum_vector")
        if steps:
            self.momentum_vector = [steps[str(i)].numpy() for i in range(len(steps))]


class RecordingFedMedian(RecordingMixin, FedMedian):
    """Coordinate-wise median of the updates (robust to a minority of arbitrary updates)."""


class RecordingFedTrimmedAvg(RecordingMixin, FedTrimmedAvg):
    """Coordinate-wise mean after cutting the largest and smallest ``beta`` share of values."""


class RecordingMultiKrum(RecordingMixin, MultiKrum):
    """Multi-Krum: averages the updates closest to their neighbours, given at most f malicious
    sites."""


class RecordingCentralDP(RecordingMixin, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP around an equally weighted FedAvg (site-level DP).

    Each round the accepted updates are clipped to L2 norm C around the global model, averaged with
    equal weights, and Gaussian noise of standard deviation σ·C/k is added for the k sites averaged:
    a Gaussian mechanism with noise multiplier σ on any one site's whole contribution. ε over the
    rounds released comes from the RDP accountant (no subsampling: every site takes part).
    """

    def __init__(
        self,
        run_log: RunLog,
        *,
        noise_multiplier: float,
        clip_norm: float,
        delta: float,
        **fedavg_options: float,
    ) -> None:
        inner = FedAvg(weighted_by_key=protocol.UNIFORM_WEIGHT, **fedavg_options)  # type: ignore[arg-type]
        super().__init__(inner, noise_multiplier, clip_norm, num_sampled_clients=1)
        self.run_log, self.delta, self.releases = run_log, delta, 0

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
        return {"releases": self.releases}, {}

    def restore_state(
        self, scalars: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
    ) -> None:
        self.releases = int(scalars.get("releases", 0))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = self._accepted(server_round, "train", replies)
        self.num_sampled_clients = max(
            len(accepted), 1
        )  # noise scaled to the k sites actually averaged
        arrays, metrics = DifferentialPrivacyServerSideFixedClipping.aggregate_train(
            self, server_round, accepted
        )
        self._account(server_round, arrays)
        return arrays, metrics

    def aggregate_mean(
        self, server_round: int, mean: ArrayRecord, *, summed: int
    ) -> ArrayRecord | None:
        """Secure aggregation's uniform mean of ``summed`` updates, each clipped to C by its own
        site: the same noise (σ·C / summed) and accounting as :meth:`aggregate_train`."""
        self.num_sampled_clients = max(summed, 1)
        arrays = self._add_noise_to_aggregated_arrays(mean)
        self._account(server_round, arrays)
        return arrays

    def _account(self, server_round: int, arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            self.releases += 1
            self.run_log.central_epsilon = epsilon_spent(
                [(self.noise_multiplier, 1.0, self.releases)], self.delta, accountant="rdp"
            )
        self.run_log.train_done(server_round, arrays)

    def _accepted(self, server_round: int, phase: str, replies: Iterable[Message]) -> list[Message]:
        accepted = self.run_log.accept(server_round, phase, replies)
        for (
            reply
        ) in accepted:  # equal weights: a site's influence is bounded by C/k, whatever its size
            reply.content.metric_records[protocol.METRICS][protocol.UNIFORM_WEIGHT] = 1
        return accepted


def build_strategy(config: RunConfig, run_log: RunLog, num_sites: int) -> Strategy:
    """The configured strategy, training and evaluating on every connected site."""
    # Rounds go ahead with whoever is connected, given min-sites: a site that dropped out must not
    # make Flower's sampler wait for it (forever); the round loop bounds that wait itself.
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": config.min_sites,
        "min_evaluate_nodes": config.min_sites,
        "min_available_nodes": config.min_sites,
        # The record names and the weight key of fedscan's protocol, not left to Flower's defaults.
        "arrayrecord_key": protocol.ARRAYS,
        "configrecord_key": protocol.CONFIG,
    }
    weighted = {"weighted_by_key": protocol.NUM_EXAMPLES}
    plain = {**common, **weighted}  # central DP weights its FedAvg equally instead
    if config.central_dp:
        strategy: Strategy = RecordingCentralDP(
            run_log,
            noise_multiplier=config.central_noise_multiplier,
            clip_norm=config.central_clip_norm,
            delta=config.central_delta,
            **common,
        )
    elif config.strategy == "fedprox":
        strategy = RecordingFedProx(proximal_mu=config.proximal_mu, **plain)
    elif config.strategy == "fedadam":
        strategy = RecordingFedAdam(
            eta=config.server_learning_rate, eta_l=config.train.learning_rate, **plain
        )
    elif config.strategy == "fedavgm":
        strategy = RecordingFedAvgM(server_momentum=config.server_momentum, **plain)
    elif config.strategy == "median":
        strategy = RecordingFedMedian(**plain)
    elif config.strategy == "trimmed-mean":
        strategy = RecordingFedTrimmedAvg(beta=config.trim_fraction, **plain)
    elif config.strategy == "krum":
        strategy = RecordingMultiKrum(
            num_malicious_nodes=config.byzantine_sites,
            num_nodes_to_select=max(1, num_sites - config.byzantine_sites),
            **plain,
        )
    else:
        strategy = RecordingFedAvg(**plain)
    strategy.run_log = run_log  # type: ignore[attr-defined]
    return strategy
