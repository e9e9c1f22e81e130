"""The site's audit log: a hash chain that names the first entry an edit, a removed line or a
truncation broke; real messages leave one entry each way, with what left and nothing
identifying."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.client.audit import AUDIT_FILE, AuditLog
from fedscan.client.ledger import LEDGER_FILE
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from tests.helpers import instruction, node_context, site_resolver


def _logged(state: Path, count: int = 5) -> AuditLog:
    log = AuditLog(state)
    for number in range(count):
        log.append({"event": "request", "run": "r1", "round": number, "action": "train"})
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_an_untouched_log_verifies(tmp_path: Path) -> None:
    log = _logged(tmp_path)
    verdict = log.verify()
    assert verdict.ok and verdict.entries == 5
    assert (log.path.stat().st_mode & 0o777) == 0o600


def test_one_edited_byte_is_found_at_its_line(tmp_path: Path) -> None:
    log = _logged(tmp_path)
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"round": 2', b'"round": 7')
    log.path.write_bytes(b"".join(lines))
    verdict = log.verify()
    assert not verdict.ok and verdict.line == 3 and "edited" in str(verdict.problem)


def test_a_deleted_line_is_found(tmp_path: Path) -> None:
    log = _logged(tmp_path)
    lines = _lines(log)
    del lines[1]
    log.path.write_bytes(b"".join(lines))
    verdict = log.verify()
    assert not verdict.ok and verdict.line == 2


@pytest.mark.parametrize("cut", ["last line", "mid-line", "everything"])
def test_a_truncated_file_is_found_against_the_ledgers_head(tmp_path: Path, cut: str) -> None:
    log = _logged(tmp_path)
    data = log.path.read_bytes()
    kept = {
        "last line": b"".join(_lines(log)[:-1]),
        "mid-line": data[: len(data) - 20],
        "everything": b"",
    }[cut]
    log.path.write_bytes(kept)
    verdict = log.verify()
    assert not verdict.ok, cut


def test_an_append_cut_before_its_head_was_committed_is_adopted(tmp_path: Path) -> None:
    log = _logged(tmp_path, 3)
    ledger = tmp_path / LEDGER_FILE
    head_at_three = ledger.read_bytes()
    log.append({"event": "request", "run": "r1", "round": 3, "action": "train"})
    ledger.write_bytes(head_at_three)  # the line reached the disk, its head's commit did not
    assert log.verify().ok
    log.append({"event": "request", "run": "r1", "round": 4, "action": "train"})
    verdict = log.verify()
    assert verdict.ok and verdict.entries == 5
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4, 5]


def test_a_dp_round_leaves_one_entry_each_way_with_what_left(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    sources = [FolderSource("site-0", str(synthetic_sites[0]))]
    client = make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")
    config = RunConfig(
        rounds=2,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    settings = {**config.to_message(), protocol.SERVER_ROUND: 1, protocol.RUN_ID: "run-a"}
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(build_model("small-cnn", seed=0).state_dict()),
            protocol.CONFIG: ConfigRecord(settings),
        }
    )
    replies = [client(instruction(content, "train"), node_context(100, 0)) for _ in range(2)]
    log = AuditLog(tmp_path / "state" / "site-0")
    entries = log.entries()
    assert log.verify().ok and [e["event"] for e in entries] == ["request", "reply"] * 2
    assert [e.get("decision") for e in entries[1::2]] == ["answered", "replayed"]
    sent = replies[0].content.array_records[protocol.ARRAYS]
    audited = entries[1]["arrays"][protocol.ARRAYS]
    assert sorted(audited) == sorted(sent)  # the log's keys are sorted
    for name, array in sent.items():
        values = array.numpy().astype(np.float64)
        assert audited[name]["shape"] == list(values.shape)
        assert audited[name]["norm"] == pytest.approx(np.linalg.norm(values.ravel()))
    assert entries[1]["epsilon_before"] == 0.0 and 0 < entries[1]["epsilon"] <= 8.0
    text = log.path.read_text()
    assert str(synthetic_sites[0]) not in text and "site-0" not in text
    for path in list(synthetic_sites[0].rglob("*.dcm"))[:5]:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(dataset.PatientID) not in text and path.name not in text


def test_the_audit_command_verifies_and_names_the_first_bad_line(tmp_path: Path) -> None:
    log = _logged(tmp_path / "state", 3)
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nname = "s"\nstate-dir = "state"\n\n[data]\ndir = "data"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 40.0\n"
    )
    runner = CliRunner()
    checked = runner.invoke(app, ["client", "audit", "--config", str(site), "--verify"])
    assert checked.exit_code == 0 and "3 entries" in checked.output, checked.output
    lines = _lines(log)
    lines[1] = lines[1].replace(b"train", b"trian")
    log.path.write_bytes(b"".join(lines))
    broken = runner.invoke(app, ["client", "audit", "--config", str(site), "--verify"])
    assert broken.exit_code == 1 and "line 2" in broken.output, broken.output
    as_json = runner.invoke(app, ["client", "audit", "--config", str(site), "--json"])
    assert [json.loads(line)["seq"] for line in as_json.output.splitlines()] == [1, 2, 3]
    assert AUDIT_FILE in str(log.path)


def test_a_run_without_dp_is_audited_with_an_infinite_epsilon(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for _ in range(2):
        log.append({"event": "reply", "run": "no-dp", "round": 1, "epsilon": "inf"})
    assert log.verify().ok and all("epsilon_before" not in e for e in log.entries())
