"""site.toml → a site that trains two runs through the deployment resolver → `fedscan privacy
report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.site_config import load_site_config
from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from tests.helpers import instruction

runner = CliRunner()


def write_site_toml(folder: Path, data_dir: Path, **privacy: object) -> Path:
    settings = {
        "max-epsilon-per-run": 6.0,
        "max-epsilon-lifetime": 15.0,
        "delta": 1e-4,
        "min-samples": 20,
        **privacy,
    }
    lines = [
        "[site]",
        'name = "st-canary"',
        'state-dir = "state"',
        "",
        "[data]",
        f'dir = "{data_dir}"',
        'cache-dir = "cache"',
        "",
        "[privacy]",
    ] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = folder / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_round(site_toml: Path, run_id: str, server_round: int, epsilon: float) -> dict:
    config = RunConfig(
        rounds=2,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=epsilon, delta=1e-4),
        cross_site=False,
    )
    settings = {**config.to_message(), "server-round": server_round, "run-id": run_id}
    content = RecordDict(
        {
            "arrays": ArrayRecord(build_model("small-cnn", seed=0).state_dict()),
            "config": ConfigRecord(settings),
        }
    )
    context = Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        run_config={},
        node_config={"site-config": str(site_toml)},
    )
    reply = make_client_app(device="cpu")(instruction(content, "train"), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return dict(reply.content["metrics"])


def test_privacy_report_after_two_runs(synthetic_sites: list[Path], tmp_path: Path) -> None:
    site_toml = write_site_toml(tmp_path, synthetic_sites[0])
    for run_id, asked in (("run-one", 8.0), ("run-two", 4.0)):  # the site caps run-one at its own 6
        for server_round in (1, 2):
            metrics = train_round(site_toml, run_id, server_round, asked)
        assert metrics["epsilon"] <= min(asked, 6.0) * 1.001
    # run-two's round 2 left masked (secure aggregation records it before the masked input)
    PrivacyLedger(load_site_config(site_toml).state_dir).record_masked("run-two", 2, 0.5)
    table = runner.invoke(app, ["privacy", "report", "--config", str(site_toml)])
    assert table.exit_code == 0, table.output
    assert "run-one" in table.output and "run-two" in table.output and "lifetime" in table.output
    assert "masked" in table.output  # the cell wraps in a narrow terminal
    report = json.loads(
        runner.invoke(app, ["privacy", "report", "--config", str(site_toml), "--json"]).output
    )
    one, two = report["runs"]
    assert (one["target_epsilon"], two["target_epsilon"]) == (6.0, 4.0)
    assert one["rounds_released"] == two["rounds_released"] == 2
    assert (one["rounds_masked"], two["rounds_masked"], two["masked_clip_bound"]) == (0, 1, [0.5])
    assert one["other_releases"] == two["other_releases"] == 1  # each run's training count
    assert 5.9 <= one["epsilon_prv"] <= 6.0 * 1.001 and one["epsilon_rdp"] >= one["epsilon_prv"]
    life = report["lifetime"]
    assert (
        life["releases"] == 6 and max(one["epsilon_prv"], two["epsilon_prv"]) < life["epsilon_prv"]
    )
    assert life["remaining"] == pytest.approx(15.0 - life["epsilon_prv"])


def test_site_toml_mistakes_name_the_key(tmp_path: Path) -> None:
    good = write_site_toml(tmp_path, tmp_path)
    assert load_site_config(good).policy.max_epsilon_lifetime == 15.0
    assert load_site_config(good).state_dir == (tmp_path / "state").resolve()
    for text, expected in (
        ("max-epsilon-per-run = 6.0\nmax-epsilon-lifetime = 3.0", "at least max-epsilon-per-run"),
        ("max-epsilon-per-run = 6.0\nmax-epsilon-lifetime = 9.0\nepsilon = 3", "unknown key"),
        ("max-epsilon-lifetime = 9.0", "max-epsilon-per-run is required"),
    ):
        broken = tmp_path / "broken.toml"
        broken.write_text(good.read_text().split("[privacy]")[0] + "[privacy]\n" + text + "\n")
        with pytest.raises(ConfigError, match=expected):
            load_site_config(broken)
    result = runner.invoke(app, ["privacy", "report", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "Cannot read the site configuration" in result.output


def test_the_shipped_example_site_toml_is_valid() -> None:
    example = load_site_config(Path(__file__).resolve().parents[2] / "deploy" / "site.example.toml")
    assert example.name == "st-marys" and example.policy.secure_mode
    assert (
        example.policy.max_epsilon_per_run == 8.0 and str(example.state_dir) == "/var/lib/fedscan"
    )
