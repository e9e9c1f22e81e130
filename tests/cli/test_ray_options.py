"""`--ray-address`, `--site-cpus`, `--site-gpus`: what reaches Flower's Simulation Engine, and a
RAY_ADDRESS left in the shell never redirects a local simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedscan.cli.simulate import federation_config
from fedscan.cli.simulation_engine import SimulationSuperLink
from fedscan.cli.simulation_sites import DataChoice, Simulation


def _simulation(**options: object) -> Simulation:
    return Simulation(DataChoice.parse("synthetic"), 3, device="cpu", **options)  # type: ignore[arg-type]


def test_an_existing_cluster_gets_the_site_resources_and_no_machine_size() -> None:
    # Ray refuses num_cpus/num_gpus when it joins a cluster: they are the cluster's own.
    on_cluster = federation_config(_simulation(ray_address="10.0.0.5:6379", site_cpus=2), False)
    local = federation_config(_simulation(), False)
    assert "client-resources-num-cpus=2" in on_cluster and "init-args-num-cpus" not in on_cluster
    assert "client-resources-num-cpus=1" in local and "init-args-num-cpus" in local
    shared = federation_config(_simulation(site_gpus=0.25), False)
    assert "client-resources-num-gpus=0.25" in shared


def test_the_cluster_address_is_kept_for_resume() -> None:
    simulation = _simulation(ray_address="10.0.0.5:6379", site_cpus=2, site_gpus=0.5)
    assert Simulation.from_json(simulation.to_json()) == simulation


def test_only_the_asked_cluster_reaches_rays_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")  # left over in the operator's shell
    local = SimulationSuperLink(tmp_path, log_file=tmp_path / "log")
    cluster = SimulationSuperLink(tmp_path, log_file=tmp_path / "log", ray_address="10.0.0.5:1")
    assert "RAY_ADDRESS" not in local.env
    assert cluster.env["RAY_ADDRESS"] == "10.0.0.5:1"
