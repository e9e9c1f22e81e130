"""The run report: report.html with inline figures, model_card.md, `fedscan report`, and a Chromium
render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity
from PIL import Image
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.common.audit_summary import summary
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.files import file_sha256
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.common.test_audit_summary import audit_record
from tests.helpers import LoopbackGrid, site_resolver


@pytest.fixture(scope="module")
def finished_run(synthetic_sites: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        root = tmp_path_factory.mktemp("report")
        sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites[:2])]
        grid = LoopbackGrid(
            make_client_app(site_resolver(sources, root / "state"), device="cpu"), 2
        )
        config = RunConfig(
            rounds=2,
            train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
            privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
            tensorboard=True,
        )
        return run_federation(grid, config, RunDirectory.create(root / "runs")).run_dir.path
    finally:
        TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None


def test_a_completed_run_gets_a_self_contained_report_and_model_card(finished_run: Path) -> None:
    page = (finished_run / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6  # AUC, loss, ε, ROC, reliability, cross-site heatmap: all inline
    for encoded in images:
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).format == "PNG"
    assert "http://" not in page and "https://" not in page
    card = (finished_run / "model_card.md").read_text()
    assert (
        "| site-0 |" in card
        and "| site-1 |" in card
        and "95 % CI" in card
        and "config hash" in card
    )
    assert (
        "| local:site-1 |" in card
        and "Cross-site validation AUC" in page
        and "Cross-site AUC" in page
    )
    assert "hist-pos" not in (finished_run / "metrics.jsonl").read_text()


def test_fedscan_report_rebuilds_and_explains_a_wrong_folder(
    finished_run: Path, tmp_path: Path
) -> None:
    (finished_run / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(finished_run)])
    assert result.exit_code == 0 and (finished_run / "report.html").is_file()
    wrong = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert wrong.exit_code == 2 and "no metrics.jsonl" in wrong.output


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium package is not installed"
)
def test_the_report_renders_offline_in_headless_chromium(
    finished_run: Path, tmp_path: Path
) -> None:
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,3200",
            f"--screenshot={screenshot}",
            (finished_run / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(screenshot)
    assert (
        image.size == (1200, 3200) and len(set(image.convert("L").getdata())) > 50
    )  # not a blank page


def test_tensorboard_events_hold_the_same_scalars_as_metrics_jsonl(finished_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fedscan.server.rundir import EVENTS_DIR
    from fedscan.server.tensorboard import round_scalars

    history = RunDirectory(finished_run, finished_run.name).read_metrics()
    events = EventAccumulator(
        str(finished_run / EVENTS_DIR)
    )  # written round by round during the run
    events.Reload()
    expected = {tag for record in history for tag in round_scalars(record)}
    assert {"pooled/auc", "auc/site-0", "epsilon/site-1", "train_loss/site-0"} <= expected
    assert set(events.Tags()["scalars"]) == expected
    for tag in expected:
        logged = {event.step: event.value for event in events.Scalars(tag)}
        wanted = {r["round"]: round_scalars(r)[tag] for r in history if tag in round_scalars(r)}
        assert logged.keys() == wanted.keys()
        assert all(
            abs(logged[step] - wanted[step]) <= 1e-6 * max(1.0, abs(wanted[step]))
            for step in wanted
        )
    result = CliRunner().invoke(app, ["report", str(finished_run), "--tensorboard"])
    assert result.exit_code == 0 and "tensorboard" in result.output
    events = EventAccumulator(str(finished_run / EVENTS_DIR))
    events.Reload()
    assert len(events.Scalars("pooled/auc")) == len(history)  # rebuilt, not appended twice


def test_a_site_that_missed_the_last_round_keeps_its_epsilon(tmp_path: Path) -> None:
    """ε is what the run has spent at a site so far: a site absent from the last round (dropped,
    or slow to reconnect after a coordinator restart) keeps its last value in the final record,
    which the summary table and the model card read."""
    from fedscan.server.run_log import RunLog

    run_log = RunLog(RunDirectory.create(tmp_path), "small-cnn", 1)
    run_log._current = {"train": {"site-0": {"epsilon": 2.5}, "site-1": {"epsilon": 2.0}}}
    assert run_log.round_done(1)["epsilon"] == {"site-0": 2.5, "site-1": 2.0}
    run_log._current = {"train": {"site-1": {"epsilon": 3.1}}}
    assert run_log.round_done(2)["epsilon"] == {"site-0": 2.5, "site-1": 3.1}


def test_a_site_s_audit_summary_of_the_final_model_is_attached_to_the_model_card(
    finished_run: Path, tmp_path: Path
) -> None:
    # Setup: a copy of the run (the module's run stays as it is), one summary of its final.pt
    # and one of another model
    run = Path(shutil.copytree(finished_run, tmp_path / finished_run.name))
    mine = audit_record(file_sha256(run / "final.pt"), run.name)
    good, wrong = tmp_path / "good.json", tmp_path / "wrong.json"
    good.write_text(json.dumps(summary(mine, "site-1")))
    wrong.write_text(json.dumps(summary({**mine, "checkpoint_sha256": "0" * 64}, "site-0")))
    # Execute
    attached = CliRunner().invoke(app, ["report", str(run), "--site-audit", str(good)])
    refused = CliRunner().invoke(app, ["report", str(run), "--site-audit", str(wrong)])
    # Assert
    assert attached.exit_code == 0, attached.output
    card = (run / "model_card.md").read_text()
    assert "Empirical privacy audits, made by the sites" in card
    row = "| site-1 | LiRA offline | 1000 / 1000 | 0.510 | 0.40 % | 1.80 % | 0.00 (1e-05) |"
    assert row in card
    assert refused.exit_code != 0 and "another model" in refused.output
    assert [p.name for p in (run / "site_audits").iterdir()] == ["site-1.json"]
    assert "Empirical privacy audits" not in (finished_run / "model_card.md").read_text()
