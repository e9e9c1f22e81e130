"""Stop signals and supervision of every long-running command, on loopback.

SIGTERM (``kill``, ``timeout``, systemd, a CI cancel), SIGHUP (a closed terminal) and SIGINT
(Ctrl-C) are each sent to ``fedscan server start``, ``client start``, ``run`` and ``simulate``
alone, once its tree is up (without waiting for training); the command's whole tree, as noted
while it ran, must be gone within ``STOP_BOUND_S``. Supervision: a coordinator whose SuperExec
dies exits non-zero naming it, and a site whose SuperNode dies starts it again with a logged
reason. Every process started is SIGKILLed by PID in a finaliser, also when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedscan.client.supernode import MAX_RESTARTS, backoff_s
from fedscan.client.supernode_launcher import LOST_EXIT, LOST_MARKER, Link
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.processes import STOP_BOUND_S, find_descendant, free_port
from tests.process_tree import Tree

# SIGTERM (systemd, `timeout`, CI cancels) to each command in CI; SIGHUP and SIGINT take the same
# path (StopSignals) and run with `-m slow`: the suite's time on 2 cores is bounded.
SIGNALS = [
    signal.SIGTERM,
    pytest.param(signal.SIGHUP, marks=pytest.mark.slow, id="SIGHUP"),
    pytest.param(signal.SIGINT, marks=pytest.mark.slow, id="SIGINT"),
]
START_S = 120.0  # a command's tree up on 2 busy cores (measured 3-15 s)
RECONNECT_S = 90.0  # the bound fedscan.client.supernode states (about 75 s), and some slack


@pytest.fixture()
def trees() -> Iterator[list[Tree]]:
    started: list[Tree] = []
    yield started
    for tree in reversed(started):
        tree.kill()


def _coordinator_toml(folder: Path) -> tuple[int, int]:
    fleet, control = free_port(), free_port()
    (folder / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\n'
        f'control-address = "127.0.0.1:{control}"\nstate-dir = "state"\n'
        "site-authentication = false\n"
    )
    return fleet, control


def _start_coordinator(folder: Path, trees: list[Tree]) -> Tree:
    coordinator = Tree(
        ["server", "start", "--config", "coordinator.toml", "--insecure"],
        cwd=folder,
        log=folder / "coordinator.log",
    )
    trees.append(coordinator)
    coordinator.wait_until(lambda: coordinator.has("flower-superexec"), START_S, "SuperExec")
    return coordinator


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One insecure coordinator on loopback and a site folder, for the site and run tests."""
    root = tmp_path_factory.mktemp("signals")
    generate_sites(root / "sites", SynthConfig(sites=1, images_per_site=20, seed=5))
    fleet, _ = _coordinator_toml(root)
    (root / "site.toml").write_text(
        '[site]\nname = "site-0"\nstate-dir = "site-state"\n\n[data]\ndir = "sites/site-0"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 20.0\ndelta = 1e-4\n"
        f'min-samples = 10\n\n[coordinator]\naddress = "127.0.0.1:{fleet}"\ninsecure = true\n'
    )
    started: list[Tree] = []
    try:
        _start_coordinator(root, started)
        yield {"root": root, "started": started}  # a test that restarts it adds the new one
    finally:
        for tree in started:
            tree.kill()


def _assert_stopped(tree: Tree, sig: signal.Signals, codes: tuple[int | None, ...]) -> None:
    code, took_s = tree.stop_with(sig, STOP_BOUND_S)
    left = tree.running()
    print(f"{sig.name}: whole tree ({len(tree.seen) + 1} processes) gone after {took_s:.2f} s")
    assert not left, f"{sig.name} left {left} running after {STOP_BOUND_S:g} s"
    assert code in codes, f"exit {code} after {sig.name}:\n{tree.output()[-3000:]}"


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_server_start_stops_its_whole_tree(
    sig: signal.Signals, tmp_path: Path, trees: list[Tree]
) -> None:
    _coordinator_toml(tmp_path)
    coordinator = _start_coordinator(tmp_path, trees)
    _assert_stopped(coordinator, sig, (0,))


def test_server_start_exits_non_zero_naming_a_dead_superexec(
    tmp_path: Path, trees: list[Tree]
) -> None:
    _coordinator_toml(tmp_path)
    coordinator = _start_coordinator(tmp_path, trees)
    superexec = find_descendant(coordinator.process.pid, "flower-superexec")
    assert superexec is not None
    os.kill(superexec, signal.SIGKILL)
    code = coordinator.process.wait(timeout=STOP_BOUND_S)
    coordinator.wait_gone(STOP_BOUND_S)
    assert code == 1 and not coordinator.running()
    assert f"flower-superexec (pid {superexec}) exited" in coordinator.output()


def _site(coordinator: dict, trees: list[Tree], name: str) -> Tree:
    root = coordinator["root"]
    site = Tree(["client", "start", "--config", "site.toml"], cwd=root, log=root / f"{name}.log")
    trees.append(site)
    site.wait_until(
        lambda: (
            "connected to the coordinator" in site.output()
            and site.has("fedscan.client.warm_exec")  # the site's executor
        ),
        START_S,
        "connection",
    )
    return site


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_client_start_stops_its_whole_tree(
    sig: signal.Signals, coordinator: dict, trees: list[Tree]
) -> None:
    site = _site(coordinator, trees, f"site-{sig.name}")
    _assert_stopped(site, sig, (0,))


@pytest.mark.parametrize(
    ("process", "said"),
    [
        ("supernode_launcher", "the SuperNode exited (status -9); restart attempt 1 of 5"),
        ("fedscan.client.warm_exec", "its ClientApp executor exited (status -9)"),
    ],
    ids=["supernode", "executor"],
)
def test_client_start_restarts_a_supernode_or_executor_that_died(
    coordinator: dict, trees: list[Tree], process: str, said: str
) -> None:
    site = _site(coordinator, trees, f"site-restart-{process}")
    pid = find_descendant(site.process.pid, process)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    site.wait_until(
        lambda: site.output().count("connected to the coordinator at") == 2, START_S, "a restart"
    )
    assert said in site.output(), site.output()[-2000:]
    _assert_stopped(site, signal.SIGTERM, (0,))


def test_a_site_reconnects_by_itself_after_its_coordinator_restarts(
    coordinator: dict, trees: list[Tree]
) -> None:
    site = _site(coordinator, trees, "site-reconnect")
    old = coordinator["started"][-1]
    _assert_stopped(old, signal.SIGTERM, (0,))
    back = time.monotonic()
    _start_coordinator(coordinator["root"], coordinator["started"])
    listening_s = time.monotonic() - back
    lines = site.output().count("connected to the coordinator")  # "re" + "connected" counted too
    site.wait_until(
        lambda: site.output().count("connected to the coordinator") > lines,
        RECONNECT_S,
        "a reconnection",
    )
    print(f"site reconnected {time.monotonic() - back - listening_s:.1f} s after the restart")
    _assert_stopped(site, signal.SIGTERM, (0,))


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_fedscan_run_stops_following(
    sig: signal.Signals, coordinator: dict, trees: list[Tree]
) -> None:
    root = coordinator["root"]
    (root / "run.toml").write_text(
        '[run]\ncoordinator-config = "coordinator.toml"\nrounds = 1\nmin-sites = 5\n'
        "join-timeout-s = 600\n"
    )
    runner = Tree(["run", "--config", "run.toml"], cwd=root, log=root / f"run-{sig.name}.log")
    trees.append(runner)
    runner.wait_until(lambda: "submitted" in runner.output(), START_S, "submission")
    # Every stop signal ends it as Ctrl-C does (StopSignals): a `flwr` call in flight goes too.
    _assert_stopped(runner, sig, (130,))
    assert "the run goes on at the coordinator" in runner.output()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_simulate_stops_flower_and_ray(
    sig: signal.Signals, tmp_path: Path, trees: list[Tree]
) -> None:
    simulation = Tree(
        ["simulate", "--sites", "2", "--images-per-site", "20", "--rounds", "3", "--out", "runs"],
        cwd=tmp_path,
        log=tmp_path / "simulate.log",
    )
    trees.append(simulation)
    simulation.wait_until(lambda: simulation.has("raylet"), START_S, "the Ray cluster")
    _assert_stopped(simulation, sig, (130,))  # as after Ctrl-C: typer's abort


def test_link_reads_what_flower_logs_of_the_connection() -> None:
    link = Link("127.0.0.1:9092", restart_after_s=120.0, stable_s=60.0)
    assert link.lost_for_s() >= 0 and not link.worked()
    said = link.read("INFO :      SuperNode ID: 1234\n")
    assert said == "connected to the coordinator at 127.0.0.1:9092 as node 1234."
    assert link.lost_for_s() == 0.0
    assert "lost the connection" in (link.read("Connection attempt failed, retrying in 3 s") or "")
    assert link.lost_for_s() > 0.0
    assert "reconnected" in (
        link.read("Connection successful after 4.20 seconds and 3 tries.") or ""
    )
    assert link.read(f"{LOST_MARKER}: its connection ended; exiting to be restarted.") is None
    assert link.lost_reason == "its connection ended"
    assert link.read("Exit Code: 305") is None and link.codes == [305]


def test_restart_waits_double_up_to_a_bound() -> None:
    assert [backoff_s(k) for k in range(1, MAX_RESTARTS + 1)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert backoff_s(10) == 60.0


def test_a_supernode_thread_that_dies_ends_the_supernode() -> None:
    script = textwrap.dedent(
        """
        import threading
        from fedscan.client import supernode_launcher
        threading.excepthook = supernode_launcher._thread_died
        threading.Thread(target=lambda: 1 / 0, name="heartbeat").start()
        threading.Event().wait(30)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == LOST_EXIT
    assert f"{LOST_MARKER}: its heartbeat thread died of ZeroDivisionError" in result.stderr


def test_a_supernode_whose_flower_loop_returns_does_not_linger() -> None:
    """Flower's loop swallows a fatal connection error (StatusCode.INTERNAL) and returns while
    its Runtime API thread keeps the process alive: the launcher ends it instead."""
    script = textwrap.dedent(
        """
        import threading
        import flwr.supernode.cli
        from fedscan.client import supernode_launcher
        def swallowed():
            threading.Thread(target=threading.Event().wait, name="runtime-api").start()
        flwr.supernode.cli.flower_supernode = swallowed
        supernode_launcher.main()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == LOST_EXIT
    assert f"{LOST_MARKER}: its connection to the coordinator ended" in result.stderr


def test_client_start_gives_up_after_bounded_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedscan.client import supernode
    from fedscan.client.site_config import load_site_config

    (tmp_path / "site.toml").write_text(
        '[site]\nname = "s"\nstate-dir = "state"\n\n[data]\ndir = "data"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 20.0\ndelta = 1e-4\n"
        'min-samples = 10\n\n[coordinator]\naddress = "127.0.0.1:9"\ninsecure = true\n'
    )
    config = load_site_config(tmp_path / "site.toml")
    config.state_dir.mkdir()
    failed = supernode.Attempt(code=1, flower_code=1, reason="boom", connected=False, worked=False)
    calls: list[int] = []
    monkeypatch.setattr(supernode, "become_subreaper", lambda: False)  # not pytest itself
    monkeypatch.setattr(supernode, "backoff_s", lambda attempt: 0.0)
    monkeypatch.setattr(supernode, "_supernode_once", lambda *args: calls.append(1) or failed)
    assert supernode.run_supernode(config, tmp_path / "site.toml") == (1, "")
    assert len(calls) == MAX_RESTARTS + 1
    console = capsys.readouterr().err
    assert "boom; restart attempt 5 of 5, next try in 0 s." in console
    assert "boom; gave up after 5 restarts. Exiting 1" in console


def test_orphans_of_a_subreaper_are_found_and_stopped() -> None:
    script = textwrap.dedent(
        """
        import os, subprocess
        from fedscan.common.processes import descendants, stop_orphans
        from fedscan.common.signals import become_subreaper
        assert become_subreaper()
        subprocess.run(["sh", "-c", "sleep 300 & exit 0"], check=True)  # the sleep is orphaned
        print(len(descendants(os.getpid())), flush=True)
        stop_orphans(grace_s=5)
        print(len(descendants(os.getpid())), flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "0"]
