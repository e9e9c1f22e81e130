"""The operator's site commands against a real loopback coordinator (TLS, site authentication):
`fedscan server sites add/list/remove` as typed, and the control-API façade's refusals.

One coordinator (`fedscan server start`) on free ports for the module, no sites; it is stopped by
process group with bounded waits, and the test checks nothing of it is left running.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedscan.common.certs import init_ca
from fedscan.common.errors import FedscanError
from fedscan.common.processes import (
    alive,
    descendants,
    free_port,
    stop_process_group,
    wait_for_port,
)
from fedscan.server import control_api
from fedscan.server.control_api import ControlApi
from fedscan.server.coordinator_config import load_coordinator_config
from fedscan.server.site_registry import public_key_pem

FEDSCAN = [sys.executable, "-m", "fedscan"]
LONG_NAME = "st-marys-hospital-radiology-department-north-wing"  # wider than 80 columns' share
IN_PROCESS_S = 5.0  # one in-process call: milliseconds when idle, room for a loaded CI machine


def fedscan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FEDSCAN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("operator")
    for args in (
        ["certs", "init"],
        ["certs", "server", "--host", "127.0.0.1"],
        ["certs", "site", LONG_NAME, "--out", "keys"],
        ["certs", "site", "in-process", "--out", "keys"],  # Flower keeps a removed site's key
        ["certs", "site", "checked", "--out", "keys"],
        ["certs", "site", "stranger", "--out", "keys"],
    ):
        assert fedscan(*args, cwd=root).returncode == 0
    fleet, control = free_port(), free_port()
    (root / "coordinator.toml").write_text(
        f'[coordinator]\nfleet-address = "127.0.0.1:{fleet}"\ncontrol-address = '
        f'"127.0.0.1:{control}"\nstate-dir = "state"\n\n[tls]\nca-certificate = "certs/ca.crt"\n'
        'certificate = "certs/server.crt"\nprivate-key = "certs/server.key"\n'
    )
    with open(root / "coordinator.log", "w") as output:
        coordinator = subprocess.Popen(
            [*FEDSCAN, "server", "start", "--config", "coordinator.toml"],
            cwd=root,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        assert wait_for_port(control), "the coordinator did not start listening"
        yield root
    finally:
        tree = [coordinator.pid, *descendants(coordinator.pid)]
        stop_process_group(coordinator, grace_s=20)
        with pytest.raises(ProcessLookupError):
            os.killpg(coordinator.pid, 0)
        assert not [pid for pid in tree if alive(pid)], "a Flower helper outlived the test"


def _site_toml(root: Path, name: str) -> Path:
    fleet = load_coordinator_config(root / "coordinator.toml").fleet_address
    site = root / f"{name}.toml"
    site.write_text(
        f'[site]\nname = "{name}"\nstate-dir = "{name}-state"\n\n[data]\ndir = "no-archive"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 40.0\n\n"
        f'[coordinator]\naddress = "{fleet}"\nca-certificate = "certs/ca.crt"\n\n'
        f'[auth]\nprivate-key = "keys/{name}.key"\n'
    )
    return site


def test_client_check_tells_an_unregistered_key_from_a_registered_one(root: Path) -> None:
    config = ["--config", "coordinator.toml"]
    added = fedscan("server", "sites", "add", "checked", "keys/checked.pub", *config, cwd=root)
    assert added.returncode == 0, added.stderr
    lines = {}
    for name in ("checked", "stranger"):
        checked = fedscan("client", "check", "--config", str(_site_toml(root, name)), cwd=root)
        assert checked.returncode != 0  # the archive folder does not exist: a failed data check
        (lines[name],) = [line for line in checked.stdout.splitlines() if "registered" in line]
    assert "knows this site's key" in lines["checked"]
    assert "refused this site" in lines["stranger"] and "sites add stranger" in lines["stranger"]
    listed = fedscan("server", "sites", "list", *config, cwd=root)
    (row,) = [line for line in listed.stdout.splitlines() if "checked" in line]
    assert "│ registered │" in row  # asking changed nothing: still registered, not online
    assert "stranger" not in listed.stdout


def test_sites_add_list_remove_as_typed(root: Path) -> None:
    config = ["--config", "coordinator.toml"]
    added = fedscan("server", "sites", "add", LONG_NAME, f"keys/{LONG_NAME}.pub", *config, cwd=root)
    assert added.returncode == 0, added.stderr
    registered = re.search(rf"site {LONG_NAME} registered \(node\s+(\d+),", added.stdout)
    assert registered, added.stdout  # (sites add's line is wrapped at 80 columns off a terminal)
    node_id = registered[1]

    listed = fedscan("server", "sites", "list", *config, cwd=root)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if LONG_NAME in line]
    assert "│ registered │" in row and node_id in row  # whole, in a pipe: nothing cut at 80

    removed = fedscan("server", "sites", "remove", LONG_NAME, *config, cwd=root)
    assert removed.returncode == 0 and f"site {LONG_NAME} removed" in removed.stdout
    relisted = fedscan("server", "sites", "list", *config, cwd=root)
    assert relisted.returncode == 0 and LONG_NAME not in relisted.stdout


def test_the_coordinators_refusals_come_back_quoted_and_fast(root: Path) -> None:
    config = load_coordinator_config(root / "coordinator.toml")
    pem = public_key_pem((root / "keys" / "in-process.pub").read_text(), Path("key.pub"))
    with ControlApi(config) as api:
        started = time.monotonic()
        node_id = api.register_node(pem, "once")
        assert time.monotonic() - started < IN_PROCESS_S
        assert node_id in {node.node_id for node in api.list_nodes()}
        with pytest.raises(FedscanError, match="refused to register the site: Public key") as twice:
            api.register_node(pem, "twice")
        with pytest.raises(FedscanError, match="Run ID not found") as no_run:
            api.run_status(12345)
        api.unregister_node(node_id)
    assert twice.value.code == no_run.value.code == control_api.REFUSED


def test_a_connection_with_another_ca_is_a_tls_failure(root: Path, tmp_path: Path) -> None:
    config = load_coordinator_config(root / "coordinator.toml")
    other = init_ca(tmp_path / "other-ca").public
    elsewhere = dataclasses.replace(config, state_dir=tmp_path / "state")
    shutil.copytree(config.flwr_home, elsewhere.flwr_home)
    connection = elsewhere.flwr_home / "config.toml"
    connection.write_text(
        connection.read_text().replace(str(config.tls.ca_certificate), str(other))
    )
    with ControlApi(elsewhere) as api, pytest.raises(FedscanError) as caught:
        api.list_nodes()
    assert caught.value.code == control_api.TLS_FAILED and str(other) in str(caught.value)
