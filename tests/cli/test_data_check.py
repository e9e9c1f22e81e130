"""`fedscan data check` and `simulate --data dicom:A,B`: summaries, clear errors, no identifiers on
screen."""

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


def test_data_check_prints_the_summary_without_identifiers(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
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


def test_data_check_explains_a_labels_csv_without_the_needed_columns(
    synthetic_sites: list[Path],
) -> None:
    result = runner.invoke(
        app, ["data", "check", str(synthetic_sites[0]), "--label-column", "diagnosis"]
    )
    assert result.exit_code == 2 and "no 'diagnosis' column" in one_line_error(result.output)
    result = runner.invoke(app, ["data", "check", str(synthetic_sites[0]), "--key", "SeriesDate"])
    assert result.exit_code == 2 and "Unknown label key" in one_line_error(result.output)


def test_simulate_checks_listed_site_folders_before_starting(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    sites = ",".join(str(p) for p in synthetic_sites[:2])
    cases = [
        ([f"dicom:{sites},{bare}"], "has no labels.csv"),
        ([f"dicom:{sites}", "--sites", "3"], "disagrees with the 2 site folders"),
        ([f"dicom:{synthetic_sites[0]}"], "at least 2"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "runs"), "--data", *args])
        assert result.exit_code == 2, result.output
        assert expected in one_line_error(result.output)


def test_data_check_of_a_segmentation_site_checks_every_mask(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    import shutil

    from PIL import Image

    site = Path(shutil.copytree(synthetic_sites[2], tmp_path / "site"))
    first_mask = sorted((site / "masks").glob("*.png"))[0]
    Image.new("L", (7, 7)).save(first_mask)  # the wrong size for its image
    result = runner.invoke(app, ["data", "check", str(site), "--task", "segmentation"])
    assert result.exit_code == 0, result.output
    assert "MASK_MISMATCH" in result.output and "│ 39" in result.output
    assert first_mask.name not in result.output
    plain = runner.invoke(
        app, ["data", "check", str(site)]
    )  # as classification: masks are not images
    assert plain.exit_code == 0 and "│ 40" in plain.output and "MASK" not in plain.output


def test_the_preflight_checks_the_data_for_every_task_its_labels_csv_serves(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    import csv
    import shutil

    from fedscan.client.preflight import _data
    from fedscan.client.site_config import load_site_config
    from tests.cli.test_privacy_report import write_site_toml

    both = _data(load_site_config(write_site_toml(tmp_path, synthetic_sites[0])))
    assert both.ok and "classification: " in both.detail and "segmentation: " in both.detail
    site = Path(shutil.copytree(synthetic_sites[0], tmp_path / "masks-only"))
    rows = list(csv.DictReader(open(site / "labels.csv", newline="")))
    with open(
        site / "labels.csv", "w", newline=""
    ) as handle:  # a segmentation site: no class column
        writer = csv.writer(handle)
        writer.writerow(["file", "mask"])
        writer.writerows((row["file"], row["mask"]) for row in rows)
    (tmp_path / "seg").mkdir()
    only = _data(load_site_config(write_site_toml(tmp_path / "seg", site)))
    assert (
        only.ok and only.detail.startswith("segmentation: ") and "classification" not in only.detail
    )


def test_synth_ct_then_data_check_volumes_prints_series_by_reason_without_identifiers(
    tmp_path: Path,
) -> None:
    import json

    written = runner.invoke(
        app,
        [
            "synth",
            "--out",
            str(tmp_path / "ct"),
            "--modality",
            "ct",
            "--sites",
            "1",
            "--images-per-site",
            "6",
        ],
    )
    assert written.exit_code == 0, written.output
    site, report = tmp_path / "ct" / "site-0", tmp_path / "series.json"
    result = runner.invoke(
        app, ["data", "check", str(site), "--volumes", "--no-cache", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "series accepted",
        "│ 6 ",
        "SERIES_MISSING_SLICE",
        "SERIES_LOCALIZER",
        "SERIES_DUPLICATE_POSITION",
        "5.00×3.40×3.40",
        "axial",
    ):
        assert expected in result.output, expected
    patient = pydicom.dcmread(next(site.rglob("IM0001.dcm"))).PatientID
    assert patient not in result.output and "CT0000" not in result.output
    assert "CT0000" in report.read_text()  # the local report names series
    assert json.loads(report.read_text())["summary"]["rejected"] == 3
    wrong = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--modality", "mr"])
    assert wrong.exit_code != 0 and "--modality" in one_line_error(wrong.output)
