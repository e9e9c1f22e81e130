"""Runs that survive, on a real loopback deployment (TLS, site authentication, three hospitals):
a site killed mid-round, the coordinator killed at a random round and resumed, a quorum never met.

Processes are killed with SIGKILL — no handler runs, as in a power cut — and every test checks
that nothing it started is left running.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.processes import (
    alive,
    descendants,
    free_port,
    stop_process_group,
    wait_for_port,
)
from tests.process_tree import kill_tree
from tests.test_deployment import FEDSCAN, fedscan, group_gone, site_toml, start, wait_until

SITES = ("site-0", "site-1", "site-2")
RUN_SETTINGS = (
    'coordinator-config = "coordinator.toml"\nlocal-epochs = 1\nbatch-size = 16\n'
    "cross-site = false\nseed = 11\n"
)


class Deployment:
    """One coordinator and three sites on 127.0.0.1; any of them can be killed and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.fleet, self.control = root, free_port(), free_port()
        self.sites: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, str] = {}
        self.coordinator: subprocess.Popen | None = None
        self.killed: list[int] = []

    def start_coordinator(self) -> None:
        self.coordinator = start(
            ["server", "start", "--config", "coordinator.toml"],
            self.root,
            f"coordinator-{time.monotonic_ns()}.log",
        )
        assert wait_for_port(self.control) and wait_for_port(self.fleet), (
            "the coordinator did not listen"
        )

    def start_site(self, name: str) -> None:
        config = site_toml(self.root, name, port=self.fleet)
        self.logs[name] = f"{name}-{time.monotonic_ns()}.log"
        self.sites[name] = start(
            ["client", "start", "--config", str(config)], self.root, self.logs[name]
        )

    def site_log(self, name: str) -> str:
        return (self.root / self.logs[name]).read_text(errors="replace")

    def wait_online(self, count: int) -> None:
        def listed() -> bool:
            return (
                fedscan(
                    "server", "sites", "list", "--config", "coordinator.toml", cwd=self.root
                ).stdout.count("│ online │")
                == count
            )

        wait_until(listed, 120, f"{count} sites online")

    def runs(self) -> Path:
        return self.root / "coordinator-state" / "runs"

    def submit(self, settings: str, name: str) -> subprocess.Popen:
        (self.root / f"{name}.toml").write_text(f"[run]\n{RUN_SETTINGS}{settings}")
        return subprocess.Popen(
            [*FEDSCAN, "run", "--config", f"{name}.toml", "--timeout", "400"],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )

    def new_run_dir(self, before: set[str]) -> Path:
        wait_until(
            lambda: set(p.name for p in self.runs().glob("*")) - before, 60, "the run directory"
        )
        return self.runs() / (set(p.name for p in self.runs().glob("*")) - before).pop()

    def existing_runs(self) -> set[str]:
        return set(p.name for p in self.runs().glob("*")) if self.runs().exists() else set()

    def stop_all(self) -> None:
        processes = [p for p in (self.coordinator, *self.sites.values()) if p is not None]
        tree = [pid for p in processes for pid in (p.pid, *descendants(p.pid))] + self.killed
        for process in reversed(processes):
            stop_process_group(process, grace_s=20)
        assert all(group_gone(p) for p in processes), "a deployment process outlived the test"
        assert not [pid for pid in tree if alive(pid)], "a Flower helper outlived the test"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("resilience")
    generate_sites(root / "sites", SynthConfig(sites=3, images_per_site=40, seed=8))
    for args in (
        ["certs", "init"],
        ["certs", "server", "--host", "127.0.0.1"],
        *(["certs", "site", name, "--out", "keys"] for name in SITES),
    ):
        assert fedscan(*args, cwd=root).returncode == 0
    setup = Deployment(root)
    (root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{setup.fleet}"\n'
        f'control-address = "127.0.0.1:{setup.control}"\nstate-dir = "coordinator-state"\n\n[tls]\n'
        'ca-certificate = "certs/ca.crt"\ncertificate = "certs/server.crt"\nprivate-key = '
        '"certs/server.key"\n'
    )
    setup.start_coordinator()
    try:
        for name in SITES:
            added = fedscan(
                "server",
                "sites",
                "add",
                name,
                f"keys/{name}.pub",
                "--config",
                "coordinator.toml",
                cwd=root,
            )
            assert added.returncode == 0, added.stderr
            setup.start_site(name)
        yield setup
    finally:
        setup.stop_all()


def _finish(process: subprocess.Popen, timeout: float = 420) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


@pytest.mark.slow
def test_a_site_killed_mid_round_does_not_stall_it_and_rejoins_later(
    deployment: Deployment,
) -> None:
    deployment.wait_online(3)
    before = deployment.existing_runs()
    runner = deployment.submit(
        "rounds = 6\nmin-sites = 2\nround-timeout-s = 40\njoin-timeout-s = 120\n"
        "epsilon = 8.0\ndelta = 1e-4\n",
        "churn",
    )
    run_dir = deployment.new_run_dir(before)
    # Round 1 is aggregated: round 2's messages are out and the sites are training.
    # Killed once it has taken round 2's message: mid-round, its reply will never come.
    wait_until(
        lambda: deployment.site_log("site-2").count("Receiving: train message") >= 2, 240, "round 2"
    )
    deployment.killed += kill_tree(deployment.sites["site-2"])
    time.sleep(2.0)
    deployment.start_site("site-2")
    code, output = _finish(runner)
    assert code == 0, output
    trained = {
        line["round"]: sorted(line["train"])
        for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    }
    assert trained[1] == list(SITES)
    assert trained[2] == ["site-0", "site-1"]  # the round went on with the two that answered
    # Flower lists the dead process as online for up to 2 missed 30 s heartbeats; then the
    # restarted one joins.
    assert any("site-2" in trained[r] for r in (3, 4, 5, 6)), f"site-2 never rejoined: {trained}"


@pytest.mark.slow
def test_a_coordinator_killed_at_a_random_round_resumes_to_the_same_weights(
    deployment: Deployment,
) -> None:
    settings = (
        "rounds = 3\nmin-sites = 3\nround-timeout-s = 120\njoin-timeout-s = 120\ndp = false\n"
    )
    before = deployment.existing_runs()
    code, output = _finish(deployment.submit(settings, "reference"))
    assert code == 0, output
    reference = deployment.new_run_dir(before)

    kill_after = random.Random().randint(
        1, 2
    )  # the checkpointed round; the kill lands in the next one
    print(f"killing the coordinator during round {kill_after + 1}")
    before = deployment.existing_runs()
    runner = deployment.submit(settings, "interrupted")
    run_dir = deployment.new_run_dir(before)
    wait_until(
        lambda: (run_dir / "checkpoints" / f"round-{kill_after:05d}.ckpt").is_file(),
        240,
        "the round",
    )
    time.sleep(random.Random().uniform(0.0, 1.0))
    deployment.killed += kill_tree(deployment.coordinator)
    code, output = _finish(runner, timeout=120)
    assert code != 0 and f"--resume {run_dir.name}" in output, output

    deployment.start_coordinator()
    resumed = fedscan(
        "run",
        "--config",
        "interrupted.toml",
        "--resume",
        run_dir.name,
        "--timeout",
        "400",
        cwd=deployment.root,
        timeout=480,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = fedscan("logs", run_dir.name, "--config", "coordinator.toml", cwd=deployment.root).stdout
    resumed_after = int(re.search(r"Resuming run \S+ after round (\d+)", log).group(1))
    assert resumed_after >= kill_after  # so at most round kill_after + 1 was computed twice
    assert [
        json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2, 3]
    expected = load_checkpoint(reference / "final.pt")[0].state_dict()
    actual = load_checkpoint(run_dir / "final.pt")[0].state_dict()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


@pytest.mark.slow  # CI time (≈ 26 s): the quorum rule is tested in process in the suite
def test_a_quorum_that_cannot_be_met_ends_the_run_with_a_clear_message(
    deployment: Deployment,
) -> None:
    started = time.monotonic()
    code, output = _finish(
        deployment.submit("rounds = 2\nmin-sites = 4\njoin-timeout-s = 15\n", "quorum"), timeout=200
    )
    assert code != 0 and "Only 3 of the 4 required sites connected within 15 s" in output, output
    assert time.monotonic() - started < 15 + 60
    server_apps = [
        pid
        for pid in descendants(deployment.coordinator.pid)
        if "serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]
    wait_until(lambda: not [pid for pid in server_apps if alive(pid)], 20, "the ServerApp to exit")
