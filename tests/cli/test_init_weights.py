"""``--init WEIGHTS`` on ``fedscan simulate`` and ``fedscan run``: the starting weights checked on
the coordinator's host before anything starts, their table printed, the run submitted with the
file's SHA-256; an unusable file is one line and exit 2. The last test is a real simulation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fedscan.cli.display import event_line
from fedscan.cli.main import app
from fedscan.common.models.networks import build_model
from fedscan.server import follow as following
from fedscan.server import launch
from fedscan.server.rundir import INIT_WEIGHTS_FILE, MODEL_CARD_FILE, Event, RunDirectory

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1" / "run"
runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture()
def earlier_run(tmp_path: Path) -> Path:
    """An earlier run's final.pt and final.json (copies of fedscan 0.1's)."""
    folder = tmp_path / "runs" / "r0"
    folder.mkdir(parents=True)
    for name in ("final.pt", "final.json"):
        shutil.copy(FIXTURE_RUN / name, folder / name)
    return folder / "final.pt"


def _one_error_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.strip()]
    assert line.startswith("error: ") and "Traceback" not in output
    return line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a text file\n", "is not a weights file"),
        (None, "cannot read"),
        ("unet", "matches none of the 14 parameters of model 'small-cnn'"),
    ],
)
def test_simulate_with_an_unusable_file_is_one_line_and_starts_nothing(
    tmp_path: Path, content: bytes | str | None, expected: str
) -> None:
    weights = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        weights.write_bytes(content)
    elif content is not None:
        torch.save(build_model(content, seed=0).state_dict(), weights)

    result = runner.invoke(
        app, ["simulate", "--out", str(tmp_path / "runs"), "--init", str(weights)], env=WIDE
    )

    assert result.exit_code == 2, result.output
    assert expected in _one_error_line(result.output)
    assert not (tmp_path / "runs").exists()


def _submit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[Any, dict]:
    """``fedscan run`` with submission and following replaced; what it would have submitted."""
    submitted: dict[str, Any] = {}
    run_dir = RunDirectory.create(tmp_path / "submitted", "r1")

    def submit(request: launch.RunRequest, resume_id: str | None) -> tuple[RunDirectory, int]:
        submitted["run"] = request.run
        return run_dir, 7

    monkeypatch.setattr(launch, "load_coordinator_config", lambda path: None)
    monkeypatch.setattr(launch, "submit", submit)
    monkeypatch.setattr(following, "follow", lambda *a, **k: {"state": "completed"})
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "run.toml"), *args], env=WIDE)
    return result, submitted


def test_run_with_init_prints_the_table_and_submits_the_files_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, earlier_run: Path
) -> None:
    (tmp_path / "run.toml").write_text('[run]\ncoordinator-config = "c.toml"\nrounds = 2\n')
    monkeypatch.chdir(earlier_run.parent)  # --init is relative to where it is typed

    result, submitted = _submit(monkeypatch, tmp_path, "--init", "final.pt")

    assert result.exit_code == 0, result.output
    assert "Starting weights final.pt: 14 of 14 parameters loaded, 0 new, 0 ignored" in (
        result.output
    )
    run = submitted["run"]
    assert run.init_weights == str(earlier_run)
    assert run.init_weights_sha256 in result.output and len(run.init_weights_sha256) == 64


def test_run_toml_init_weights_are_relative_to_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, earlier_run: Path
) -> None:
    toml = '[run]\ncoordinator-config = "c.toml"\ninit-weights = "runs/r0/final.pt"\n'
    (tmp_path / "run.toml").write_text(toml)

    result, submitted = _submit(monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    assert submitted["run"].init_weights == str(earlier_run)
    assert "14 of 14 parameters loaded" in result.output


def test_run_refuses_init_with_resume_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", "--config", str(tmp_path / "run.toml"), "--resume", "r1", "--init", "x.pt"],
        env=WIDE,
    )

    assert result.exit_code == 2
    assert "leave out --init" in _one_error_line(result.output)


# 22 s of Ray; CI keeps the in-process warm-started federation (tests/server) and this CLI's
# checks above.
@pytest.mark.slow
def test_simulate_continues_an_earlier_federation_from_its_final_pt(
    tmp_path: Path, earlier_run: Path
) -> None:
    # A real simulation (≈ 30 s on 2 cores): 2 sites, 1 round, no cross-site validation.
    args = ["--sites", "2", "--images-per-site", "40", "--rounds", "1", "--no-cross-site"]
    env = {**os.environ, **WIDE, "FEDSCAN_CACHE_DIR": str(tmp_path / "cache")}

    result = subprocess.run(
        [sys.executable, "-m", "fedscan", "simulate", "--out", str(tmp_path / "out"), *args]
        + ["--init", str(earlier_run)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting weights final.pt: 14 of 14 parameters loaded, 0 new, 0 ignored" in (
        result.stdout
    )
    (run_dir,) = list((tmp_path / "out").iterdir())
    loaded = json.loads((run_dir / INIT_WEIGHTS_FILE).read_text())
    assert {status for _, status, _, _ in loaded["parameters"]} == {"loaded"}
    assert f"SHA-256 `{loaded['sha256']}`" in (run_dir / MODEL_CARD_FILE).read_text()
    assert loaded["sha256"] in result.stdout


def test_fedscan_run_prints_the_coordinators_load_as_one_event_line() -> None:
    event = {"event": Event.INIT_WEIGHTS_LOADED, "sha256": "ab" * 32, "loaded": 12, "new": 2}

    line = event_line({**event, "ignored": 0})

    assert line == (
        "starting weights (SHA-256 abababababab…): 12 parameters loaded, 2 new, 0 ignored"
    )
