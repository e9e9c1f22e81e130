"""A site's [policy]: read from site.toml; each rule refuses a run that breaks it with the coded
reply `policy-refused` (the rule only in the site's log); no policy serves as before."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedscan.client.app import make_client_app
from fedscan.client.audit import AuditLog
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.run_policy import RunPolicy
from fedscan.client.site import Site
from fedscan.client.site_config import load_site_config
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import REPLY_CODES, ConfigError, ErrorCode
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.site_settings import SiteSettings
from fedscan.common.training_settings import TrainSettings
from tests.helpers import OPEN_POLICY, instruction, node_context

RUN = RunConfig(
    rounds=3,
    cross_site=True,
    train=TrainSettings(local_epochs=2, batch_size=8, augment=False),
    privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
)
SETTINGS = SiteSettings(RUN.train, RUN.privacy, RUN.rounds, RUN.cross_site)


@pytest.mark.parametrize(
    ("policy", "broken"),
    [
        (RunPolicy(), None),
        (RunPolicy(allowed_tasks=("segmentation",)), "task 'classification'"),
        (RunPolicy(allowed_models=("unet", "cnn3d")), "model 'small-cnn'"),
        (RunPolicy(allowed_strategies=("median", "krum")), "strategy 'fedavg'"),
        (RunPolicy(require_central_dp=True), "central DP 'off'"),
        (RunPolicy(max_rounds=2), "rounds 3"),
        (RunPolicy(max_local_epochs=1), "local epochs 2"),
        (RunPolicy(max_releases_per_run=3), "releases per run 4"),  # 3 rounds + the fine-tune
        (RunPolicy(allow_cross_site=False), "cross-site validation True"),
        (RunPolicy(min_fedscan_version="0.1.1"), "fedscan '0.1.0'"),
        (RunPolicy(max_rounds=3, max_local_epochs=2, max_releases_per_run=4), None),
    ],
)
def test_each_rule_names_what_it_refuses(policy: RunPolicy, broken: str | None) -> None:
    assert policy.broken_rule(SETTINGS, "0.1.0") == broken


def test_site_toml_policy_is_read_and_checked(tmp_path: Path) -> None:
    base = (
        '[site]\nname = "s"\nstate-dir = "state"\n\n[data]\ndir = "data"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 40.0\n\n"
    )
    path = tmp_path / "site.toml"
    path.write_text(base + '[policy]\nallowed-models = ["small-cnn"]\nmax-rounds = 10\n')
    policy = load_site_config(path).run_policy
    assert policy.allowed_models == ("small-cnn",) and policy.max_rounds == 10
    assert any("rounds: 10" in line for line in policy.lines())
    for bad, named in (
        ('allowed-models = ["vgg"]', "allowed-models"),
        ("max-rounds = -1", "max-rounds"),
        ('allowed-strategies = ["fedsgd"]', "allowed-strategies"),
        ("allow-anything = true", "allow-anything"),
        ('min-fedscan-version = "soon"', "min-fedscan-version"),
    ):
        path.write_text(base + f"[policy]\n{bad}\n")
        with pytest.raises(ConfigError, match=named):
            load_site_config(path)


def test_a_refused_run_gets_the_code_and_spends_nothing(
    synthetic_sites: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    site = Site(
        FolderSource("site-0", str(synthetic_sites[0])),
        state,
        OPEN_POLICY,
        run_policy=RunPolicy(allowed_models=("unet",)),
    )
    client = make_client_app(lambda context: site, device="cpu")
    config = {**replace(RUN, cross_site=False).to_message(), protocol.SERVER_ROUND: 1}
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(build_model("small-cnn", seed=0).state_dict()),
            protocol.CONFIG: ConfigRecord({**config, protocol.RUN_ID: "run-b"}),
        }
    )
    with caplog.at_level(logging.WARNING):
        reply = client(instruction(content, "train"), node_context(100, 0))
    assert reply.has_error() and reply.error.code == REPLY_CODES[ErrorCode.POLICY_REFUSED][0]
    assert "small-cnn" not in reply.error.reason and "model 'small-cnn'" in caplog.text
    assert PrivacyLedger(state).releases("run-b") == []
    audited = AuditLog(state).entries()
    assert audited[-1]["decision"] == "refused" and audited[-1]["code"] == "policy-refused"


def test_the_strategy_and_central_dp_reach_the_site_only_when_not_the_default() -> None:
    """fedscan 0.1's messages stay as they were for a FedAvg run without central DP."""
    plain = RunConfig().to_message()
    assert "strategy" not in plain and "central-noise-multiplier" not in plain
    sent = RunConfig(strategy="fedavg", central_noise_multiplier=1.2).to_message()
    settings = SiteSettings.from_message(sent)
    assert settings.central_noise_multiplier == 1.2
    assert RunPolicy(require_central_dp=True).broken_rule(settings, "0.1.0") is None
    median = SiteSettings.from_message(RunConfig(strategy="median").to_message())
    assert RunPolicy(allowed_strategies=("median",)).broken_rule(median, "0.1.0") is None
