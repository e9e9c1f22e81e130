"""The coordinator's record of a run and the sites' audit logs agree: the same settings hash for
every request, the same shapes and norms for every update; the record's chain catches a cut."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.client.audit import AuditLog
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.audit import RunAudit
from fedscan.server.rundir import RunDirectory
from tests.helpers import LoopbackGrid, site_resolver


def test_both_sides_record_the_same_exchanges(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites[:2])]
    grid = LoopbackGrid(
        make_client_app(site_resolver(sources, tmp_path / "sites"), device="cpu"), 2
    )
    config = RunConfig(
        rounds=2,
        min_sites=2,
        cross_site=False,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "state" / "runs"))
    record = RunAudit(result.run_dir.path)
    assert record.verify().ok
    coordinator = record.entries()
    for index in range(2):
        site = AuditLog(tmp_path / "sites" / f"site-{index}")
        assert site.verify().ok
        mine = site.entries()
        asked = [e["config"] for e in mine if e["event"] == "request"]
        sent = [
            e["config"] for e in coordinator if e["event"] == "sent" and e["node"] == 100 + index
        ]
        assert asked == sent and len(sent) == 3  # 2 rounds + the final evaluation
        released = [e["arrays"] for e in mine if e["event"] == "reply" and e["arrays"]]
        received = [
            e["arrays"]
            for e in coordinator
            if e["event"] == "received" and e["site"] == f"site-{index}" and e["arrays"]
        ]
        assert released == received and len(released) == 2  # shapes and norms, bit for bit
    lines = record.path.read_bytes().splitlines(keepends=True)
    record.path.write_bytes(b"".join(lines[:-1]))
    assert not record.verify().ok

    (tmp_path / "coordinator.toml").write_text('[coordinator]\nstate-dir = "state"\n')
    runner = CliRunner()
    command = [
        "server",
        "audit",
        result.run_dir.run_id,
        "--config",
        str(tmp_path / "coordinator.toml"),
    ]
    broken = runner.invoke(app, [*command, "--verify"])
    assert broken.exit_code == 1 and "does not verify" in broken.output, broken.output
    as_json = runner.invoke(app, [*command, "--json"])
    assert len(as_json.output.splitlines()) == len(lines) - 1
    assert all(
        json.loads(line)["event"] in ("sent", "received") for line in as_json.output.splitlines()
    )
