"""Run approval: a site that requires it refuses a run with `run-not-approved` until someone at
the site approves its configuration hash; a refused run, or a run id back with other settings, is
answered `run-refused`; `fedscan client runs` shows what a pending run would spend."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.client.approvals import configuration, configuration_hash
from fedscan.client.audit import AuditLog
from fedscan.client.site import Site
from fedscan.client.site_config import load_site_config
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.errors import REPLY_CODES, ErrorCode
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.site_settings import SiteSettings
from fedscan.common.training_settings import TrainSettings
from tests.helpers import instruction, node_context

RUN = RunConfig(
    rounds=2,
    cross_site=False,
    train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
    privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
)
NOT_APPROVED = REPLY_CODES[ErrorCode.RUN_NOT_APPROVED][0]
REFUSED = REPLY_CODES[ErrorCode.RUN_REFUSED][0]
WIDE = {"COLUMNS": "200"}  # the tables' rows whole (a hash is 64 characters)


def _site_toml(tmp_path: Path, data: Path, policy: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nname = "site-0"\nstate-dir = "state"\n\n[data]\ndir = "{data}"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 40.0\ndelta = 1e-4\n"
        f"min-samples = 10\n\n[policy]\n{policy}\n"
    )
    return path


def _client(path: Path):
    config = load_site_config(path)
    site = Site(config.data, config.state_dir, config.policy, "cpu", config.run_policy)
    return make_client_app(lambda context: site, device="cpu"), config


def _train(client, run: RunConfig, run_id: str, server_round: int = 1):
    settings = {**run.to_message(), protocol.SERVER_ROUND: server_round, protocol.RUN_ID: run_id}
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(build_model("small-cnn", seed=0).state_dict()),
            protocol.CONFIG: ConfigRecord(settings),
        }
    )
    return client(instruction(content, "train"), node_context(100, 0))


def test_a_run_waits_for_approval_then_trains(synthetic_sites: list[Path], tmp_path: Path) -> None:
    path = _site_toml(tmp_path, synthetic_sites[0], "require-approval = true")
    client, config = _client(path)
    first = _train(client, RUN, "run-a")
    assert first.has_error() and first.error.code == NOT_APPROVED
    assert _train(client, RUN, "run-a").error.code == NOT_APPROVED  # still pending
    runner = CliRunner()
    listed = runner.invoke(app, ["client", "runs", "--config", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    (pending,) = json.loads(listed.output)
    assert pending["run_id"] == "run-a" and pending["state"] == "pending"
    spend = pending["spend"]
    assert spend["releases"] == 2 and spend["noise_multiplier"] > 0
    assert 0 < spend["epsilon_lifetime_after"] <= 8.0 * 1.01
    table = runner.invoke(app, ["client", "runs", "--config", str(path)])
    assert "run-a" in table.output and "pending" in table.output
    approved = runner.invoke(app, ["client", "approve", "run-a", "--config", str(path)])
    assert approved.exit_code == 0 and "approved" in approved.output, approved.output
    trained = _train(client, RUN, "run-a")
    assert not trained.has_error()
    assert 0 < trained.content["metrics"][protocol.EPSILON] <= 8.0
    decisions = [e for e in AuditLog(config.state_dir).entries() if e["event"] == "approval"]
    assert [e["decision"] for e in decisions] == ["pending", "approved"]
    assert AuditLog(config.state_dir).verify().ok


def test_a_changed_configuration_and_a_refused_run_are_refused(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    path = _site_toml(tmp_path, synthetic_sites[0], "require-approval = true")
    client, config = _client(path)
    _train(client, RUN, "run-a")
    digest = json.loads(
        CliRunner().invoke(app, ["client", "runs", "--config", str(path), "--json"]).output
    )[0]["config_hash"]
    by_hash = CliRunner().invoke(app, ["client", "approve", digest[:10], "--config", str(path)])
    assert by_hash.exit_code == 0, by_hash.output
    faster = replace(RUN, train=replace(RUN.train, learning_rate=0.5))
    assert _train(client, faster, "run-a").error.code == REFUSED  # same id, other settings
    _train(client, RUN, "run-b")
    CliRunner().invoke(app, ["client", "refuse", "run-b", "--config", str(path)])
    assert _train(client, RUN, "run-b").error.code == REFUSED
    unknown = CliRunner().invoke(app, ["client", "approve", "run-c", "--config", str(path)])
    assert unknown.exit_code != 0 and "fedscan client runs" in unknown.output


@pytest.mark.parametrize(("rounds", "trains"), [(2, True), (5, False)])
def test_auto_approval_takes_runs_within_the_policy_only(
    synthetic_sites: list[Path], tmp_path: Path, rounds: int, trains: bool
) -> None:
    policy = "require-approval = true\nauto-approve = true\nmax-rounds = 3"
    client, config = _client(_site_toml(tmp_path, synthetic_sites[0], policy))
    reply = _train(client, replace(RUN, rounds=rounds), "run-a")
    assert reply.has_error() is not trains
    if not trains:
        assert reply.error.code == REPLY_CODES[ErrorCode.POLICY_REFUSED][0]
    else:
        (decision,) = [e for e in AuditLog(config.state_dir).entries() if e["event"] == "approval"]
        assert decision["decision"] == "approved" and decision["by"] == "policy"


def test_the_approval_view_shows_the_starting_weights_and_the_approval_covers_them(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    path = _site_toml(tmp_path, synthetic_sites[0], "require-approval = true")
    client, _ = _client(path)
    digest = "0123456789abcdef" * 4
    warm = replace(RUN, init_weights="/coordinator/runs/r0/final.pt", init_weights_sha256=digest)
    _train(client, warm, "run-warm")
    _train(client, RUN, "run-cold")

    listed = CliRunner().invoke(app, ["client", "runs", "--config", str(path), "--json"])
    table = CliRunner().invoke(app, ["client", "runs", "--config", str(path)], env=WIDE)

    runs = {run["run_id"]: run for run in json.loads(listed.output)}
    assert runs["run-warm"]["settings"]["init-weights-sha256"] == digest
    assert "/coordinator" not in listed.output  # the coordinator's path never reaches a site
    assert runs["run-warm"]["config_hash"] != runs["run-cold"]["config_hash"]
    assert f"SHA-256 {digest}" in table.output and "random (seed 0)" in table.output
    other = replace(warm, init_weights_sha256="f" * 64)
    assert _train(client, other, "run-warm").error.code == REFUSED  # other weights, same id


def test_a_run_from_random_weights_keeps_the_hash_it_had_before_starting_weights() -> None:
    settings = SiteSettings.from_message(RUN.to_message())

    approved = configuration(settings, "0.1.0")

    assert "init_weights_sha256" not in approved["settings"]
    assert (
        configuration_hash(settings, "0.1.0")
        == hashlib.sha256(
            json.dumps(approved, sort_keys=True, separators=(",", ":"), default=str).encode()
        ).hexdigest()
    )
