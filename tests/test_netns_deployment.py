"""The deployment guide, followed on separate hosts: a coordinator and two hospitals, each in its
own network namespace at its own address, reaching each other only over the private bridge.

Certificates are made exactly as ``deploy/README.md`` says (``--host`` the one address sites
dial), the configs are the guide's templates with only paths and that address filled in, and
every step is a documented ``fedscan`` command run inside its host. One DP run goes through a
site SIGKILLed mid-round and restarted (it trains again in a later round) and a coordinator
SIGKILLed mid-round and resumed. Nothing started here outlives the test: every namespace must be
empty before it is deleted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.processes import descendants, stop_process_group
from tests import netns
from tests.test_deployment import launch
from tests.test_deployment_resilience import kill_tree, wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FEDSCAN = [sys.executable, "-m", "fedscan"]
SITES = ("site-0", "site-1", "site-2")  # min-sites >= 2: one can die mid-round
FLEET_PORT, CONTROL_PORT = 9092, 9093  # the templates' ports: each host has its own
# A loaded 2-core host took ~60 s for round 1. A site restarted at once after its kill is back
# online before Flower notices it left, so its lost message is never answered and round 2 ends
# only at this timeout (CI: 300 s after the round began, 50 ms past a 300-s wait).
ROUND_TIMEOUT_S = 180

pytestmark = pytest.mark.skipif(bool(netns.unavailable()), reason=netns.unavailable() or "ok")


def _fill(template: str, values: dict[str, str]) -> str:
    """The template with ``key = value`` lines replaced (every key must be in the template)."""
    for key, value in values.items():
        template, count = re.subn(
            rf"^{re.escape(key)} = .*$", f"{key} = {value}", template, flags=re.MULTILINE
        )
        assert count >= 1, f"{key} is not in the template"
    return template


class Federation:
    """The guide's federation on namespaced hosts; every process it starts is stopped by PID."""

    def __init__(self, root: Path, hosts: netns.Hosts) -> None:
        self.root, self.hosts = root, hosts
        self.coordinator_address = hosts.address["coordinator"]
        self.processes: dict[str, subprocess.Popen] = {}
        self.killed: list[int] = []

    def fedscan(self, host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.hosts.command(host, [*FEDSCAN, *args]),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, host: str, name: str, *args: str) -> subprocess.Popen:
        with open(self.root / f"{name}-{time.monotonic_ns()}.log", "w") as output:
            process = subprocess.Popen(
                self.hosts.command(host, [*FEDSCAN, *args]),
                cwd=self.root,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def listening(self, host: str, address: str, port: int) -> bool:
        probe = (
            "import socket,sys\ns=socket.socket()\ns.settimeout(2)\n"
            f"sys.exit(s.connect_ex(({address!r}, {port})))"
        )
        return (
            subprocess.run(self.hosts.command(host, [sys.executable, "-c", probe])).returncode == 0
        )

    def start_coordinator(self) -> None:
        self.start("coordinator", "coordinator", "server", "start", "--config", "coordinator.toml")
        wait_until(
            lambda: (
                self.listening("coordinator", "127.0.0.1", CONTROL_PORT)
                and self.listening("coordinator", self.coordinator_address, FLEET_PORT)
            ),
            90,
            "the coordinator to listen",
        )

    def start_site(self, name: str) -> None:
        self.start(name, name, "client", "start", "--config", f"{name}.toml")

    def site_log(self, name: str) -> str:
        path = self.root / f"{name}-logs" / "supernode.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop_all(self) -> None:
        tree = [pid for p in self.processes.values() for pid in (p.pid, *descendants(p.pid))]
        for process in reversed(list(self.processes.values())):
            stop_process_group(process, grace_s=20)
        left = self.hosts.leftovers()
        assert not left, f"processes outlived the test in namespaces: {left} (tree {tree})"


def _write_configs(root: Path, coordinator: str) -> None:
    (root / "coordinator.toml").write_text(
        _fill(
            (DEPLOY / "coordinator.example.toml").read_text(),
            {
                "state-dir": '"coordinator-state"',
                "public-hosts": f'["{coordinator}"]',  # the one address the guide's sites dial
                "ca-certificate": '"certs/ca.crt"',
                "certificate": '"certs/server.crt"',
                "private-key": '"certs/server.key"',
            },
        )
    )
    for name in SITES:
        values = {
            "name": f'"{name}"',
            "state-dir": f'"{name}-state"',
            "dir": f'"sites/{name}"',
            "cache-dir": f'"{name}-cache"',
            "address": f'"{coordinator}:{FLEET_PORT}"',
            "ca-certificate": '"certs/ca.crt"',
            "private-key": f'"keys/{name}.key"',
            "log-dir": f'"{name}-logs"',
        }
        (root / f"{name}.toml").write_text(
            _fill((DEPLOY / "site.example.toml").read_text(), values)
        )
    (root / "run.toml").write_text(
        _fill(
            (DEPLOY / "run.example.toml").read_text(),
            {
                "coordinator-config": '"coordinator.toml"',
                "rounds": "4",
                "min-sites": "2",
                "local-epochs": "1",
                "batch-size": "16",
                "join-timeout-s": "120",
                "round-timeout-s": str(ROUND_TIMEOUT_S),
                "cross-site": "false",
            },
        )
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("netns")
    generate_sites(root / "sites", SynthConfig(sites=3, images_per_site=40, seed=12))
    hosts = netns.Hosts(["coordinator", *SITES])
    setup = Federation(root, hosts)
    try:
        _write_configs(root, setup.coordinator_address)
        for host, args in (
            ("coordinator", ["certs", "init", "--out", "certs"]),
            (
                "coordinator",
                ["certs", "server", "--ca", "certs", "--out", "certs"]
                + ["--host", setup.coordinator_address],
            ),
            *((name, ["certs", "site", name, "--out", "keys"]) for name in SITES),
        ):
            made = setup.fedscan(host, *args)
            assert made.returncode == 0, made.stdout + made.stderr
        setup.start_coordinator()
        for name in SITES:
            added = setup.fedscan(
                "coordinator",
                "server",
                "sites",
                "add",
                name,
                f"keys/{name}.pub",
                "--config",
                "coordinator.toml",
            )
            assert added.returncode == 0, added.stdout + added.stderr
        yield setup
    finally:
        try:
            setup.stop_all()
        finally:
            hosts.close()


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _run_dir(root: Path) -> Callable[[], Path | None]:
    def newest() -> Path | None:
        runs = sorted((root / "coordinator-state" / "runs").glob("*/"))
        return runs[-1] if runs else None

    return newest


# 8 rounds with two kills and a resume took 8.8 min at load 10 on 2 cores; 5 rounds 180 s on a
# busy machine; now 4 (the coordinator dies in round 3, site-2 trains again in round 3 or 4).
@pytest.mark.timeout(1200)
def test_the_guide_on_separate_hosts_survives_a_site_and_a_coordinator_kill(
    federation: Federation,
) -> None:
    root = federation.root
    for name in SITES:
        checked = federation.fedscan(name, "client", "check", "--config", f"{name}.toml")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        federation.start_site(name)
    # A site reaches the coordinator's Fleet port and nothing else of it.
    assert not federation.listening("site-0", federation.coordinator_address, CONTROL_PORT)
    runner = launch(
        root, federation.hosts.command("coordinator", [*FEDSCAN, "run", "--config", "run.toml"])
    )
    federation.processes["run"] = runner  # stopped with the rest if the test fails
    newest = _run_dir(root)
    wait_until(lambda: newest() is not None or runner.poll() is not None, 60, "the run directory")
    run_dir = newest()
    assert run_dir is not None, runner.communicate(timeout=30)[0]
    checkpoint = str(run_dir / "checkpoints" / "round-{:05d}.ckpt")

    # Round 2's message reached site-2: kill it mid-round, start it again at once.
    wait_until(lambda: Path(checkpoint.format(1)).is_file(), 300, "round 1")
    wait_until(
        lambda: federation.site_log("site-2").count("Receiving: train message") >= 2, 120, "round 2"
    )
    federation.killed += kill_tree(federation.processes["site-2"])
    killed_site_at = time.monotonic()
    federation.start_site("site-2")

    # Round 2 ends (with or without site-2); the coordinator dies in round 3.
    wait_until(lambda: Path(checkpoint.format(2)).is_file(), ROUND_TIMEOUT_S + 120, "round 2")
    federation.killed += kill_tree(federation.processes["coordinator"])
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode != 0 and f"--resume {run_dir.name}" in output, output

    # Resume once site-2 is back: rounds 3 and 4 of 40-image sites take ~7 s each, and under load
    # site-2's restart took ~50 s to reconnect, after both had ended without it.
    connected = federation.site_log("site-2").count("Connection successful")
    federation.start_coordinator()
    wait_until(
        lambda: federation.site_log("site-2").count("Connection successful") > connected,
        240,
        "site-2 connected to the restarted coordinator",
    )
    resumed = federation.fedscan(
        "coordinator", "run", "--config", "run.toml", "--resume", run_dir.name, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed", status
    history = _metrics(run_dir)
    trained = {line["round"]: sorted(line["train"]) for line in history}
    assert list(trained) == list(range(1, 5))
    # site-2 died with round 2's message: that round ended without it or, when it was back within
    # the round, with it (the coordinator holds its message until it is gone for good).
    assert trained[1] == list(SITES) and {"site-0", "site-1"} <= set(trained[2]), trained
    later = [r for r in range(3, 5) if "site-2" in trained[r]]
    assert later, f"site-2 never trained again after its restart: {trained}"
    ended = time.monotonic() - killed_site_at
    print(f"site-2 trained again in round {later[0]}; the run ended {ended:.0f} s after its kill")
    # The sites' default metric policy across hosts: DP releases, within their metric budget
    assert set(history[-1]["metrics_policy"].values()) == {"dp"}
    assert all(0 < eps <= 4.0 * 1.001 for eps in history[-1]["metrics_epsilon"].values())
    assert history[-1]["pooled"]["noise-std"] > 0
    assert sorted(history[-1]["epsilon"]) == list(SITES)
    assert all(0 < eps <= 8.0 * 1.001 for eps in history[-1]["epsilon"].values())
