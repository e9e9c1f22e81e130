"""`fedscan simulate --ray-address`: the same federation on an existing Ray cluster, here two Ray
nodes started on this machine (loopback only), each with one CPU, so the two sites' workers run
one on each node. The cluster is the test's: started in its own process groups, stopped by them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedscan.common.processes import free_port
from tests.test_simulation_engine import FEDSCAN, _env, _leftover_processes, _only_run

RAY = Path(sys.executable).with_name("ray")


def _ray(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(RAY), "start", "--block", "--disable-usage-stats", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _nodes(address: str, env: dict[str, str]) -> int:
    status = subprocess.run(
        [str(RAY), "status", "--address", address], env=env, capture_output=True, text=True
    )
    return status.stdout.count(" node_")


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    # A short temp dir: Ray's socket paths must stay under the 107-byte limit.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    loopback = ("--node-ip-address", "127.0.0.1", "--num-cpus", "1")
    head = _ray("--head", "--port", port, "--include-dashboard", "false", "--temp-dir", temp,
                *loopback, env=env)  # fmt: skip
    nodes = [head]
    try:
        for _ in range(60):  # the head answers within a few seconds; then the second node joins
            if len(nodes) == 1 and _nodes(address, env) == 1:
                nodes.append(_ray("--address", address, *loopback, env=env))
            if _nodes(address, env) == 2:
                break
            time.sleep(1)
        assert _nodes(address, env) == 2, "the two-node Ray cluster did not come up"
        yield address
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(nodes):
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow  # ≈ 2 minutes on 2 cores; the private-Ray simulation runs in CI
def test_simulate_runs_on_an_existing_two_node_ray_cluster(
    two_node_cluster: str, tmp_path: Path
) -> None:
    # Execute
    done = subprocess.run(
        [*FEDSCAN, "simulate", "--ray-address", two_node_cluster, "--sites", "2",
         "--images-per-site", "40", "--rounds", "2", "--local-epochs", "1", "--no-cross-site",
         "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = _only_run(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert [line["round"] for line in map(json.loads, (run_dir / "metrics.jsonl").open())] == [1, 2]
    simulation = json.loads((run_dir / "simulation.json").read_text())
    assert simulation["ray_address"] == two_node_cluster
    assert not _leftover_processes(tmp_path)  # the driver left; the cluster is the operator's
