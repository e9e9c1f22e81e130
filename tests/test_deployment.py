"""A real deployment on loopback, through fedscan commands only: TLS, site authentication, 2 DP
rounds.

One coordinator (`fedscan server start`) and two hospitals (`fedscan client start`) run as separate
process groups; `fedscan run` launches the run. Every process is stopped by PID with bounded waits,
and each test checks that nothing of its own is left running.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.processes import (
    alive,
    descendants,
    free_port,
    stop_process_group,
    wait_for_port,
)
from tests.process_tree import kill_tree

FEDSCAN = [sys.executable, "-m", "fedscan"]


def fedscan(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FEDSCAN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    with open(cwd / log, "w") as output:
        return subprocess.Popen(
            [*FEDSCAN, *args],
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def group_gone(process: subprocess.Popen) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return True
    return False


def site_toml(
    folder: Path, name: str, *, port: int, ca: str = "certs/ca.crt", file: str = ""
) -> Path:
    path = folder / (file or f"{name}.toml")
    path.write_text(
        f'[site]\nname = "{name}"\nstate-dir = "{name}-state"\n\n[data]\ndir = "sites/{name}"\n'
        'cache-dir = "cache"\n\n[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = '
        "20.0\n"
        f'delta = 1e-4\nmin-samples = 10\n\n[coordinator]\naddress = "127.0.0.1:{port}"\n'
        f'ca-certificate = "{ca}"\n\n[auth]\nprivate-key = "keys/{name}.key"\n'
    )
    return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("deployment")
    generate_sites(root / "sites", SynthConfig(sites=2, images_per_site=40, seed=5))
    for args in (
        ["certs", "init"],
        ["certs", "server", "--host", "localhost", "--host", "127.0.0.1"],
        ["certs", "site", "site-0", "--out", "keys"],
        ["certs", "site", "site-1", "--out", "keys"],
        ["certs", "site", "intruder", "--out", "keys"],
    ):
        assert fedscan(*args, cwd=root).returncode == 0
    fleet, control = free_port(), free_port()
    (root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\ncontrol-address = '
        f'"127.0.0.1:{control}"\n'
        'state-dir = "coordinator-state"\n\n[tls]\nca-certificate = "certs/ca.crt"\n'
        'certificate = "certs/server.crt"\nprivate-key = "certs/server.key"\n'
    )
    coordinator = start(
        ["server", "start", "--config", "coordinator.toml"], root, "coordinator.log"
    )
    processes = [coordinator]
    try:
        assert wait_for_port(control) and wait_for_port(fleet), (
            "the coordinator did not start listening"
        )
        for name in ("site-0", "site-1"):
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
            processes.append(
                start(
                    ["client", "start", "--config", str(site_toml(root, name, port=fleet))],
                    root,
                    f"{name}.log",
                )
            )
        yield {"root": root, "fleet": fleet, "processes": processes}
    finally:
        tree = [
            pid for p in processes for pid in (p.pid, *descendants(p.pid))
        ]  # Flower's helpers included
        for process in reversed(processes):
            stop_process_group(process, grace_s=20)
        assert all(group_gone(p) for p in processes), "a deployment process outlived the test"
        assert not [pid for pid in tree if alive(pid)], "a Flower helper outlived the test"


def test_two_dp_rounds_over_tls_with_authenticated_sites(federation: dict) -> None:
    root = federation["root"]
    (root / "run.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 2\nmin-sites = 2\n'
        "local-epochs = 1\nbatch-size = 16\nepsilon = 8.0\ndelta = 1e-4\n"
        "join-timeout-s = 120\nround-timeout-s = 300\n"
    )
    result = fedscan("run", "--config", "run.toml", "--timeout", "420", cwd=root, timeout=480)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 2" in result.stdout and "completed" in result.stdout
    run_dir = next((root / "coordinator-state" / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2]
    assert sorted(lines[-1]["epsilon"]) == ["site-0", "site-1"]
    assert all(0 < eps <= 8.0 * 1.001 for eps in lines[-1]["epsilon"].values())
    assert (run_dir / "final.pt").is_file() and (run_dir / "cross_site.json").is_file()
    listed = fedscan("server", "sites", "list", "--config", "coordinator.toml", cwd=root)
    assert listed.returncode == 0 and listed.stdout.count("│ online │") == 2
    status = fedscan("status", "--config", "coordinator.toml", cwd=root)
    assert run_dir.name in status.stdout and "completed" in status.stdout
    logs = fedscan("logs", run_dir.name, "--config", "coordinator.toml", cwd=root)
    assert logs.returncode == 0 and "Round 2 of 2" in logs.stdout


def launch_run(root: Path, config: str) -> subprocess.Popen:
    """``fedscan run`` in its own process group, followed in the background (output piped)."""
    return launch(root, [*FEDSCAN, "run", "--config", config, "--timeout", "420"])


def launch(root: Path, command: list[str]) -> subprocess.Popen:
    """``command`` in ``root``, in its own process group, in the background (output piped)."""
    return subprocess.Popen(
        command,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _run_toml(root: Path, name: str, min_sites: int) -> str:
    (root / name).write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 1\n'
        f"min-sites = {min_sites}\nlocal-epochs = 1\nbatch-size = 16\nepsilon = 1.0\n"
        "delta = 1e-4\ncross-site = false\njoin-timeout-s = 120\nround-timeout-s = 300\n"
    )
    return name


def _start_third_site(federation: dict) -> None:
    """site-2 (site-0's images), registered and started; stopped with the federation."""
    root = federation["root"]
    assert fedscan("certs", "site", "site-2", "--out", "keys", cwd=root).returncode == 0
    added = fedscan(
        "server",
        "sites",
        "add",
        "site-2",
        "keys/site-2.pub",
        "--config",
        "coordinator.toml",
        cwd=root,
    )
    assert added.returncode == 0, added.stderr
    (root / "sites" / "site-2").symlink_to(root / "sites" / "site-0", target_is_directory=True)
    config = site_toml(root, "site-2", port=federation["fleet"])
    federation["processes"].append(
        start(["client", "start", "--config", str(config)], root, "site-2.log")
    )
    wait_until(
        lambda: "connected to the coordinator" in (root / "site-2.log").read_text(),
        120,
        "site-2's connection",
    )


# CI time (78 s on a loaded 2-core machine): approvals are in the suite in-process
# (tests/client/test_approvals.py, tests/server/test_approval_wait.py); this is -m slow.
@pytest.mark.slow
def test_a_site_approves_a_run_and_its_policy_refuses_another(federation: dict) -> None:
    """site-1 requires approval: run A waits (and `fedscan status` says so) until
    `fedscan client approve`, then both sites train. Then site-1 allows only the U-Net: run B
    (small-cnn) is refused there with its code, and goes on with site-0 and a third site."""
    root, site_1 = federation["root"], federation["root"] / "site-1.toml"
    original, runs = site_1.read_text(), root / "coordinator-state" / "runs"
    before = set(runs.iterdir())
    site_1.write_text(original + "\n[policy]\nrequire-approval = true\n")  # read per message
    run_a = launch_run(root, _run_toml(root, "approval.toml", 2))
    try:
        listed: list[dict] = []

        def pending() -> bool:
            shown = fedscan("client", "runs", "--config", "site-1.toml", "--json", cwd=root)
            listed[:] = [r for r in json.loads(shown.stdout or "[]") if r["state"] == "pending"]
            return bool(listed)

        wait_until(pending, 120, "pending run at site-1")
        assert listed[0]["spend"]["releases"] == 1 and listed[0]["spend"]["noise_multiplier"] > 0
        wait_until(
            lambda: (
                "waiting for approval"
                in fedscan("status", "--config", "coordinator.toml", cwd=root).stdout
            ),
            60,
            "pending approval in `fedscan status`",
        )
        approved = fedscan(
            "client", "approve", listed[0]["run_id"], "--config", "site-1.toml", cwd=root
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        output, _ = run_a.communicate(timeout=420)
    finally:
        stop_process_group(run_a)
        site_1.write_text(original + '\n[policy]\nallowed-models = ["unet"]\n')
    assert run_a.returncode == 0, output
    (run_dir,) = set(runs.iterdir()) - before
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(history[0]["train"]) == ["site-0", "site-1"]
    _start_third_site(federation)  # run B needs 2 sites besides the one that refuses it
    try:
        run_b = fedscan(
            "run",
            "--config",
            _run_toml(root, "forbidden.toml", 2),
            "--timeout",
            "420",
            cwd=root,
            timeout=480,
        )
    finally:
        site_1.write_text(original)
    assert run_b.returncode in (0, 3), run_b.stdout + run_b.stderr  # 3: completed with gaps
    (run_dir_b,) = set(runs.iterdir()) - before - {run_dir}
    first = json.loads((run_dir_b / "metrics.jsonl").read_text().splitlines()[0])
    assert sorted(first["train"]) == ["site-0", "site-2"]
    assert any(r["reason"].startswith("policy-refused") for r in first["refusals"]), first
    audited = fedscan("client", "audit", "--config", "site-1.toml", "--verify", "--json", cwd=root)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert any('"policy-refused"' in line for line in audited.stdout.splitlines())


def test_a_secure_aggregation_run_survives_a_site_killed_after_masking(federation: dict) -> None:
    """Three sites, secure aggregation over TLS: site-2 is killed (SIGKILL, its whole process
    tree) as soon as round 1's unmask request reaches it, i.e. after the coordinator holds its
    masked update; round 1 still sums all three and round 2 goes on with the two that are left."""
    root, runs = federation["root"], federation["root"] / "coordinator-state" / "runs"
    if not (root / "site-2.log").exists():
        _start_third_site(federation)
    site_2 = next(p for p in federation["processes"] if "site-2.toml" in " ".join(p.args))
    audit = root / "site-2-state" / "audit.jsonl"
    asked = len(_unmask_requests(audit))
    (root / "secure.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 2\nmin-sites = 2\n'
        "local-epochs = 1\nbatch-size = 16\nepsilon = 8.0\ndelta = 1e-4\ncross-site = false\n"
        "secure-aggregation = true\njoin-timeout-s = 120\nround-timeout-s = 60\n"
    )
    before = set(runs.iterdir())
    run = launch_run(root, "secure.toml")
    try:
        wait_until(lambda: len(_unmask_requests(audit)) > asked, 300, "site-2's unmask request")
        kill_tree(site_2)  # its SuperNode and ClientApp too
        output, _ = run.communicate(timeout=420)
    finally:
        stop_process_group(run)
    assert run.returncode in (0, 3), output  # 3: completed with gaps (site-2's final evaluation)
    (run_dir,) = set(runs.iterdir()) - before
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert history[0]["secure_aggregation"]["summed"] == 3, history[0]
    assert history[1]["secure_aggregation"]["summed"] == 2, history[1]
    assert (run_dir / "final.pt").is_file()


def _unmask_requests(audit: Path) -> list[dict]:
    """The unmask requests in a site's audit log: each comes after its masked update arrived."""
    if not audit.exists():
        return []
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["action"].endswith("unmask") and e["event"] == "request"]


@pytest.mark.slow  # segmentation federations run in CI in-process; this one with -m slow
def test_the_same_sites_serve_a_dp_segmentation_run(federation: dict) -> None:
    """The sites' labels CSV names masks too: a segmentation run needs no change at the sites."""
    root = federation["root"]
    (root / "segmentation.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\ntask = "segmentation"\n'
        "rounds = 1\nmin-sites = 2\nlocal-epochs = 1\nbatch-size = 16\n"
        "delta = 1e-4\njoin-timeout-s = 120\nround-timeout-s = 300\n"
    )
    before = set((root / "coordinator-state" / "runs").iterdir())
    result = fedscan(
        "run", "--config", "segmentation.toml", "--timeout", "420", cwd=root, timeout=480
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dice" in result.stdout and "completed" in result.stdout
    (run_dir,) = set((root / "coordinator-state" / "runs").iterdir()) - before
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    pooled, total = final["pooled"], final["pooled"]["predicted"] + final["pooled"]["truth"]
    # The sites' overlap counts leave as DP releases: at 2 × ~24 small masks their noise can clamp
    # both sums to 0, and a Dice of nothing is undefined (NaN), never 1; its interval says so.
    if total:
        assert pooled["dice"] == 2 * pooled["intersection"] / total
    else:
        assert math.isnan(pooled["dice"]) and pooled["intersection"] == 0
    assert 0 <= pooled["dice-ci-low"] <= pooled["dice-ci-high"] <= 1
    assert sorted(final["evaluate"]) == ["site-0", "site-1"] and "auc" not in final["aggregated"]
    assert all(0 < eps <= 8.0 * 1.001 for eps in final["epsilon"].values())
    assert json.loads((run_dir / "final.json").read_text())["model"] == "unet"
    assert not (run_dir / "cross_site.json").exists()


def test_a_site_with_an_unregistered_key_is_refused(federation: dict) -> None:
    root = federation["root"]
    config = site_toml(root, "intruder", port=federation["fleet"])
    (root / "sites" / "intruder").symlink_to(root / "sites" / "site-0", target_is_directory=True)
    result = fedscan("client", "start", "--config", str(config), cwd=root, timeout=180)
    assert result.returncode == 1 and "refused this site's key" in result.stderr


def test_a_site_with_the_wrong_ca_fails_its_preflight(federation: dict, tmp_path: Path) -> None:
    root = federation["root"]
    assert fedscan("certs", "init", "--out", str(tmp_path / "other-ca"), cwd=root).returncode == 0
    config = site_toml(
        root,
        "site-0",
        port=federation["fleet"],
        ca=str(tmp_path / "other-ca" / "ca.crt"),
        file="wrong-ca.toml",
    )
    result = fedscan("client", "check", "--config", str(config), cwd=root)
    assert result.returncode == 2
    assert "FAIL coordinator" in result.stdout and "does not trust" in result.stdout


def test_a_plaintext_connection_to_the_tls_fleet_port_fails(federation: dict) -> None:
    address = f"127.0.0.1:{federation['fleet']}"
    with grpc.insecure_channel(address) as plain:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(plain).result(timeout=5)
    credentials = grpc.ssl_channel_credentials(
        (federation["root"] / "certs" / "ca.crt").read_bytes()
    )
    with grpc.secure_channel(
        address, credentials
    ) as secure:  # positive control: TLS with the CA connects
        grpc.channel_ready_future(secure).result(timeout=10)


def test_a_coordinator_without_certificates_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "coordinator.toml").write_text('[coordinator]\nstate-dir = "state"\n')
    result = fedscan("server", "start", "--config", "coordinator.toml", cwd=tmp_path, timeout=60)
    assert (
        result.returncode == 2
        and "no [tls] section" in result.stderr
        and "--insecure" in result.stderr
    )
    assert not (tmp_path / "state").exists()  # refused before anything started
