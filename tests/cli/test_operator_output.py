"""What the operator's read commands print into a pipe: `sites list` whole (never cut to 80
columns), `logs` each record once and verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.server import launch, site_registry

runner = CliRunner()
NAME = "st-marys-hospital-radiology-department-north-wing"
NODE = "11010493137345403753"


@pytest.fixture
def coordinator_toml(tmp_path: Path) -> str:
    (tmp_path / "coordinator.toml").write_text('[coordinator]\nstate-dir = "state"\n')
    return str(tmp_path / "coordinator.toml")


def test_sites_list_in_a_pipe_keeps_every_cell_whole(
    coordinator_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = {
        "name": NAME,
        "status": "online",
        "online_at": "2026-12-02 01:02:03Z",
        "node_id": NODE,
        "key_sha256": "cc9dd9f8c15ba886",
        "added": "2026-12-02T01:00:00Z",
    }
    monkeypatch.setattr(site_registry, "list_sites", lambda _: [row])

    result = runner.invoke(app, ["server", "sites", "list", "--config", coordinator_toml])

    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if NAME in line]
    assert "│ online │" in line and NODE in line and "2026-12-02 01:02:03Z" in line
    assert "…" not in result.output


def test_logs_prints_each_record_once_as_flower_stores_it(
    coordinator_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = "INFO : [tls] ok :smile:\nINFO : Round 1 of 1 " + "x" * 120 + "\n"
    monkeypatch.setattr(launch, "flower_run_ids_of", lambda *_: [7])
    monkeypatch.setattr(launch, "server_log", lambda _, flower_run_id: stored)

    result = runner.invoke(app, ["logs", "RUN", "--config", coordinator_toml])

    assert result.exit_code == 0, result.output
    assert result.output == stored
