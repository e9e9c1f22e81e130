"""The console command: version, synth, evaluate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedscan import __version__
from fedscan.cli.main import app
from fedscan.common.metrics.calibration import Calibration
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model
from fedscan.common.processes import free_port

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "vgg16"], "Unknown model"),
        (["--epsilon", "0"], "epsilon must be a positive"),
        (["--epsilon", "-3"], "epsilon must be a positive"),
        (["--delta", "1"], "delta must be in (0, 1)"),
        (["--data", "npz:/no/such/file.npz"], "does not exist"),
        (["--sites", "1"], "at least 2"),
        (["--partition", "dirichlet:-1", "--data", "npz:{npz}"], "Unknown partition"),
        (["--data", "npz:{garbage}"], "Cannot read the npz"),
        (["--data", "ftp://x"], "Unknown --data"),
        (["--partition", "dirichlet:0.5"], "applies to --data npz"),
        (["--ray-address", "headnode"], "HOST:PORT"),
        (["--ray-address", "127.0.0.1:{closed}"], "No Ray cluster answers at 127.0.0.1:"),
        (["--site-cpus", "0"], "at least 1"),
        (["--site-gpus", "2"], "in [0, 1]"),
    ],
)
def test_bad_simulate_arguments_give_one_line_and_exit_2(
    args: list[str], expected: str, tmp_path: Path, tiny_npz: Path
) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 truncated")
    closed = free_port()  # nothing listens there
    args = [a.format(npz=tiny_npz, garbage=garbage, closed=closed) for a in args]
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_synth_writes_sites(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["synth", "--sites", "2", "--images-per-site", "10", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "site-1").glob("*.dcm"))) == 10
    assert (tmp_path / "site-0" / "labels.csv").is_file()


def _evaluate(checkpoint: Path, data: str, *options: str):
    """``fedscan evaluate`` of ``checkpoint`` on ``data`` on the CPU, with more ``options``."""
    return runner.invoke(
        app,
        ["evaluate", "--checkpoint", str(checkpoint), "--data", data, "--device", "cpu", *options],
    )


def test_evaluate_prints_json_metrics_for_npz_and_dicom(
    tmp_path: Path, tiny_npz: Path, synthetic_sites: list[Path]
) -> None:
    checkpoint = tmp_path / "final.pt"
    save_checkpoint(checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    for data in (f"npz:{tiny_npz}", f"dicom:{synthetic_sites[0]}"):
        result = _evaluate(checkpoint, data, "--split", "val")
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output)
        assert {
            "auc",
            "auc_ci_low",
            "auc_ci_high",
            "accuracy",
            "sensitivity",
            "specificity",
            "f1",
            "ece",
            "n",
            "threshold",
        } <= set(metrics)
        assert metrics["n"] == (60 if data.startswith("npz") else 40)


def test_evaluate_writes_plots_and_a_local_predictions_file(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    checkpoint = tmp_path / "final.pt"
    save_checkpoint(checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    result = _evaluate(
        checkpoint,
        f"dicom:{synthetic_sites[0]}",
        "--plots",
        str(tmp_path / "plots"),
        "--predictions",
        str(tmp_path / "predictions.csv"),
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 1000
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "key,label,score,calibrated_score" and len(rows) == 41
    assert {row.split(",")[0] for row in rows[1:]} == {
        p.name for p in synthetic_sites[0].glob("*.dcm")
    }


def test_evaluate_applies_the_stored_calibration_map_and_reports_ece_before_and_after(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    # Prepare: a checkpoint whose run stored a Platt map (and an older one without)
    calibrated, plain = tmp_path / "final.pt", tmp_path / "old.pt"
    state = build_model("small-cnn", seed=0).state_dict()
    platt = Calibration(0.5, -1.0)
    save_checkpoint(calibrated, "small-cnn", state, calibration=platt.to_json())
    save_checkpoint(plain, "small-cnn", state)
    # Execute
    outputs = {}
    for checkpoint in (calibrated, plain):
        predictions = checkpoint.with_suffix(".csv")
        result = _evaluate(
            checkpoint, f"dicom:{synthetic_sites[0]}", "--predictions", str(predictions)
        )
        assert result.exit_code == 0, result.output
        outputs[checkpoint.stem] = json.loads(result.output), predictions
    # Assert: every row's calibrated score is the map of its score; both ECEs are reported
    metrics, predictions = outputs["final"]
    assert metrics["calibration"] == platt.to_json()
    assert 0 <= metrics["ece_calibrated"] <= 1 and 0 <= metrics["ece"] <= 1
    rows = [line.split(",") for line in predictions.read_text().splitlines()[1:]]
    scores = np.array([float(row[2]) for row in rows])
    mapped = np.array([float(row[3]) for row in rows])
    assert np.allclose(mapped, platt.apply(scores), rtol=1e-6)
    old, _ = outputs["old"]
    assert old["ece_calibrated"] == old["ece"]
    assert "without a calibration map" in old["calibration"]["reason"]


def test_a_site_can_apply_the_map_fitted_on_its_own_images(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    # Prepare: a first evaluation prints this site's own map and its cross-fitted ECE
    checkpoint = tmp_path / "final.pt"
    save_checkpoint(checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    first = json.loads(_evaluate(checkpoint, f"dicom:{synthetic_sites[1]}").output)
    assert 0 <= first["ece_local_recalibration"] <= 1
    saved = tmp_path / "local.json"
    saved.write_text(json.dumps({"local_calibration": first["local_calibration"]}))
    # Execute
    again = _evaluate(checkpoint, f"dicom:{synthetic_sites[1]}", "--calibration", str(saved))
    (tmp_path / "bad.json").write_text('{"method": "isotonic"}')
    bad = _evaluate(
        checkpoint, f"dicom:{synthetic_sites[1]}", "--calibration", str(tmp_path / "bad.json")
    )
    # Assert
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["calibration"] == first["local_calibration"]
    assert bad.exit_code == 2 and "not a calibration map" in bad.output


def test_evaluate_without_checkpoint_json_is_a_clear_error(tmp_path: Path, tiny_npz: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--data", f"npz:{tiny_npz}"]
    )
    assert result.exit_code == 2 and "needs both" in result.output


def test_evaluate_with_a_mismatched_model_or_no_usable_data_is_one_line(
    tmp_path: Path, tiny_npz: Path
) -> None:
    mismatched = tmp_path / "final.pt"
    save_checkpoint(mismatched, "small-cnn", build_model("resnet18", seed=0).state_dict())
    junk = tmp_path / "site"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(b"junk")
    (junk / "labels.csv").write_text("file,label\na.dcm,1\n")
    good = tmp_path / "good.pt"
    save_checkpoint(good, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    for checkpoint, data, expected in (
        (mismatched, f"npz:{tiny_npz}", "does not hold a 'small-cnn' model"),
        (good, f"dicom:{junk}", "No usable image"),
    ):
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--data", data])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and expected in result.output and len(lines) == 1, (
            result.output
        )
