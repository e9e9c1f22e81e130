"""`fedscan data check` and `simulate --data dicom:A,B`: summaries, clear errors, no identifiers on screen."""

from __future__ import annotations

from pathlib import Path

import pydicom
from typer.testing import CliRunner

from fedscan.cli.main import app

runner = CliRunner()


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output
    return lines[-1]


def test_data_check_prints_the_summary_without_identifiers(synthetic_sites: list[Path], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["data", "check", str(synthetic_sites[0]), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "Site data check" in result.output and "Explicit VR Little Endian" in result.output
    assert "│ accepted" in result.output and "│ 40" in result.output
    first = sorted(synthetic_sites[0].glob("*.dcm"))[0]
    assert first.name not in result.output
    assert pydicom.dcmread(first).PatientID not in result.output
    assert first.name in report.read_text()  # the local report names files


def test_data_check_with_no_readable_file_exits_non_zero(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"\x00" * 10)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "labels.csv").write_text("file,label\na.dcm,1\nnotes.txt,0\n")
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--no-cache"])
    assert result.exit_code == 1
    assert "No usable image" in one_line_error(result.output) and "NOT_DICOM" in result.output


def test_data_check_on_an_empty_or_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,label\n")
    empty = runner.invoke(app, ["data", "check", str(tmp_path), "--no-cache"])
    assert empty.exit_code == 1 and "0 of 0 files" in one_line_error(empty.output)
    missing = runner.invoke(app, ["data", "check", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a folder" in one_line_error(missing.output)


def test_data_check_explains_a_labels_csv_without_the_needed_columns(synthetic_sites: list[Path]) -> None:
    result = runner.invoke(app, ["data", "check", str(synthetic_sites[0]), "--label-column", "diagnosis"])
    assert result.exit_code == 2 and "no 'diagnosis' column" in one_line_error(result.output)
    result = runner.invoke(app, ["data", "check", str(synthetic_sites[0]), "--key", "SeriesDate"])
    assert result.exit_code == 2 and "Unknown label key" in one_line_error(result.output)


def test_simulate_checks_listed_site_folders_before_starting(synthetic_sites: list[Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    sites = ",".join(str(p) for p in synthetic_sites[:2])
    cases = [([f"dicom:{sites},{bare}"], "has no labels.csv"),
             ([f"dicom:{sites}", "--sites", "3"], "disagrees with the 2 site folders"),
             ([f"dicom:{synthetic_sites[0]}"], "at least 2")]
    for args, expected in cases:
        result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "runs"), "--data", *args])
        assert result.exit_code == 2, result.output
        assert expected in one_line_error(result.output)
