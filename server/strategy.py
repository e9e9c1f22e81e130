"""Strategies by name (FedAvg default, FedProx, FedAdam), each recording its rounds."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from fedscan.common.config import RunConfig
from fedscan.server.recorder import RoundRecorder


class RecordingMixin:
    """Filters replies through the recorder before Flower's aggregation runs."""

    recorder: RoundRecorder

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = self.recorder.accept(server_round, "train", replies)
        arrays, metrics = super().aggregate_train(server_round, accepted)  # type: ignore[misc]
        self.recorder.train_done(server_round, arrays)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        accepted = self.recorder.accept(server_round, "evaluate", replies)
        metrics = super().aggregate_evaluate(server_round, accepted)  # type: ignore[misc]
        self.recorder.round_done(server_round)
        return metrics


class RecordingFedAvg(RecordingMixin, FedAvg):
    """FedAvg that records per-site results."""


class RecordingFedProx(RecordingMixin, FedProx):
    """FedProx that records per-site results (sites apply the proximal step)."""


class RecordingFedAdam(RecordingMixin, FedAdam):
    """FedAdam (server-side Adam on the averaged update) that records per-site results."""


def build_strategy(config: RunConfig, recorder: RoundRecorder, num_sites: int) -> Strategy:
    """The configured strategy, training and evaluating on every connected site."""
    common = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": config.min_sites,
              "min_evaluate_nodes": config.min_sites, "min_available_nodes": max(config.min_sites, num_sites)}
    if config.strategy == "fedprox":
        strategy: Strategy = RecordingFedProx(proximal_mu=config.proximal_mu, **common)
    elif config.strategy == "fedadam":
        strategy = RecordingFedAdam(eta=config.server_learning_rate, eta_l=config.train.learning_rate,
                                    **common)
    else:
        strategy = RecordingFedAvg(**common)
    strategy.recorder = recorder  # type: ignore[attr-defined]
    return strategy
