"""Partial fine-tuning (run config ``trainable``): sites train and send back only the chosen
parameters, under DP, and the coordinator keeps the global model's values for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import Message

from fedscan.client.app import make_client_app
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ConfigError
from fedscan.common.models.networks import build_model
from fedscan.common.models.trainable import check_spec, trained_names
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import FINAL_MODEL, RunDirectory
from tests.helpers import LoopbackGrid, site_resolver

HEAD = ("head.weight", "head.bias")


def test_head_and_last_layers_and_prefixes_resolve_to_parameter_names() -> None:
    model = build_model("small-cnn", seed=0)
    assert trained_names(model, "head") == HEAD
    assert trained_names(model, "last:2") == ("features.9.weight", "features.9.bias", *HEAD)
    assert trained_names(model, "head,features.8") == (
        "features.8.weight",
        "features.8.bias",
        *HEAD,
    )
    assert len(trained_names(model, "all")) == len(list(model.parameters()))
    with pytest.raises(ConfigError, match="top-level names: features, head"):
        trained_names(model, "classifier")
    for bad in ("", "last:0", "last:x", "he ad"):
        with pytest.raises(ConfigError, match="trainable"):
            check_spec(bad)


def test_a_strategy_with_server_state_is_refused_for_a_partial_update() -> None:
    with pytest.raises(ConfigError, match="fedadam.*keeps server state"):
        RunConfig(strategy="fedadam", train=TrainSettings(trainable="head"))


class _Spy:
    """The sites' ClientApp, noting the parameter names of every update it sends back."""

    def __init__(self, app) -> None:
        self.app, self.sent = app, []

    def __call__(self, message: Message, context) -> Message:
        reply = self.app(message, context)
        if reply.has_content() and protocol.ARRAYS in reply.content.array_records:
            self.sent.append(tuple(reply.content.array_records[protocol.ARRAYS].keys()))
        return reply


def test_a_head_only_dp_federation_sends_and_changes_only_the_head(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Setup
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites[:2])]
    spy = _Spy(make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu"))
    config = RunConfig(
        rounds=2,
        min_sites=2,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False, trainable="head"),
    )
    run_dir = RunDirectory.create(tmp_path / "runs")
    # Execute: two DP rounds and the cross-site fine-tune
    run_federation(LoopbackGrid(spy, 2), config, run_dir)
    # Assert: every update carried the head only; the body is still the seed's, the head moved
    assert spy.sent and set(spy.sent) == {HEAD}
    start = build_model("small-cnn", seed=config.seed).state_dict()
    final = torch.load(run_dir.path / f"{FINAL_MODEL}.pt", weights_only=True)
    for name, value in start.items():
        assert torch.equal(final[name], value) == (name not in HEAD), name
