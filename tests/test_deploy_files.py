"""deploy/: the example configs load, and the compose file's mounts are exactly what its README
makes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fedscan.client.site_config import load_site_config
from fedscan.common.addresses import split_address
from fedscan.common.certcheck import ServedTls, certificate_problems
from fedscan.common.config import RunConfig
from fedscan.common.privacy import (
    calibrate_noise,
    epsilon_spent,
    planned_releases,
    sample_rate,
    steps_per_epoch,
)
from fedscan.server.coordinator_config import load_coordinator_config
from fedscan.server.launch import load_run_request

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_example_and_compose_configs_load() -> None:
    coordinator = load_coordinator_config(DEPLOY / "coordinator.example.toml")
    assert coordinator.tls is not None and coordinator.site_authentication
    assert coordinator.control_address.startswith("127.0.0.1:")  # the control port stays private
    assert load_run_request(DEPLOY / "run.example.toml").run.rounds == 5
    site = load_site_config(DEPLOY / "site.example.toml")
    assert site.connection is not None and site.connection.private_key is not None
    for name in ("site-0", "site-1"):
        compose_site = load_site_config(DEPLOY / "compose" / f"{name}.toml")
        assert compose_site.connection.address == "coordinator:9092" and compose_site.name == name
    settings = tomllib.loads((DEPLOY / "compose" / "run.toml").read_text())["run"]
    assert (
        settings.pop("coordinator-config") == "/etc/fedscan/coordinator.toml"
    )  # the container's path
    assert RunConfig.from_flat(settings).min_sites == 2
    assert (
        load_coordinator_config(DEPLOY / "compose" / "coordinator.toml").fleet_address
        == "0.0.0.0:9092"
    )


def _assert_the_certificate_serves_the_compose_coordinator(copy: Path) -> None:
    """The README's certificate covers what the compose coordinator serves and what sites dial."""
    coordinator = load_coordinator_config(copy / "compose" / "coordinator.toml")
    dialled = load_site_config(copy / "compose" / "site-0.toml").connection.address
    served = ServedTls(
        copy / "certs" / "ca.crt",
        copy / "certs" / "server.crt",
        copy / "certs" / "server.key",
        (*coordinator.served_hosts(), split_address(dialled)[0]),
    )
    assert certificate_problems(served) == []


def test_the_site_template_accepts_a_pilot_site_and_about_ten_runs() -> None:
    """min-samples = 50 refused a 60-image site (43-46 training images) and a lifetime of 20 ran
    out after a few ε-8 runs: the template admits both, as the ledger composes runs."""
    policy = load_site_config(DEPLOY / "site.example.toml").policy
    run = load_run_request(DEPLOY / "run.example.toml").run
    pilot_training_images = 45
    assert policy.min_samples <= pilot_training_images
    rate = sample_rate(pilot_training_images, run.train.batch_size)
    steps = steps_per_epoch(pilot_training_images, run.train.batch_size)
    steps *= run.train.local_epochs * planned_releases(run.rounds, run.cross_site)
    target = min(run.privacy.epsilon, policy.max_epsilon_per_run)
    sigma = calibrate_noise(
        target_epsilon=target, delta=policy.delta, sample_rate=rate, total_steps=steps
    )
    assert epsilon_spent([(sigma, rate, steps)] * 10, policy.delta) <= policy.max_epsilon_lifetime


def test_compose_mounts_exist_after_the_readme_preparation(tmp_path: Path) -> None:
    copy = shutil.copytree(
        DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("certs", "keys", "data")
    )
    steps = re.findall(
        r"^fedscan (certs .+|synth .+)$", (DEPLOY / "README.md").read_text(), re.MULTILINE
    )
    assert len(steps) == 4
    for step in steps:
        for command in step.split(" && fedscan "):
            result = subprocess.run(
                [sys.executable, "-m", "fedscan", *command.split()],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
    compose = yaml.safe_load((copy / "docker-compose.yml").read_text())
    _assert_the_certificate_serves_the_compose_coordinator(copy)
    assert set(compose["services"]) == {"coordinator", "site-0", "site-1"}
    for name, service in compose["services"].items():
        assert (
            (copy / service["build"]["context"] / service["build"]["dockerfile"])
            .resolve()
            .is_file()
        )
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (copy / source).exists(), (
                    f"{name} mounts {source}, which the README steps do not make"
                )
            else:
                assert source in compose["volumes"]
    assert list(compose["services"]["coordinator"]["ports"]) == ["9092:9092"]
    assert "ports" not in compose["services"]["site-0"]  # a site only dials out


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    if shutil.which("docker")
    else True,
    reason="no docker compose plugin here",
)
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_systemd_units_run_fedscan_commands_that_exist() -> None:
    from typer.testing import CliRunner

    from fedscan.cli.main import app

    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        exec_start = (
            re.search(r"^ExecStart=\S+/fedscan (.+)$", unit.read_text(), re.MULTILINE)
            .group(1)
            .split()
        )
        command = exec_start[: exec_start.index("--config")]
        assert CliRunner().invoke(app, [*command, "--help"]).exit_code == 0, unit.name
