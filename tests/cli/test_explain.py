"""``fedscan explain`` on a tiny synthetic site: an overlay per image, the index page with the
errors first, a map per class, Secondary Captures pydicom reads back, one-line errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.common.data.synth import MULTICLASS_CLASSES, SynthConfig, generate_sites
from fedscan.common.explain.secondary_capture import SECONDARY_CAPTURE
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model

IMAGES = 10


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-sites")
    return generate_sites(root, SynthConfig(sites=1, images_per_site=IMAGES, seed=7))[0]


@pytest.fixture(scope="module")
def explained(site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("explain-binary")
    checkpoint = folder / "final.pt"
    save_checkpoint(checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    command = ["explain", "--checkpoint", str(checkpoint), "--data", f"dicom:{site}"]
    result = CliRunner().invoke(app, [*command, "--out", str(folder / "maps"), "--dicom-sc"])
    assert result.exit_code == 0, result.output
    return folder / "maps", result.output


def test_one_overlay_per_image_and_an_index_page(explained: tuple[Path, str]) -> None:
    maps, output = explained
    overlays = sorted((maps / "overlays").glob("*.png"))
    assert len(overlays) == IMAGES
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in overlays)
    page = (maps / "index.html").read_text()
    assert page.count("<img ") == IMAGES and f"explained {IMAGES} images" in output
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_the_index_lists_false_positives_then_false_negatives_first(
    explained: tuple[Path, str],
) -> None:
    page = (explained[0] / "index.html").read_text()
    flags = re.findall(r'<td class="flag">([A-Z ]*)</td>', page)
    scores = [float(s) for s in re.findall(r"<td>(\d\.\d{3})</td>", page)]
    group = [0 if "FP" in f else 1 if "FN" in f else 2 for f in flags]
    assert len(flags) == IMAGES and group == sorted(group) and 2 in group
    for g in set(group):  # highest score first within each group
        within = [score for score, k in zip(scores, group, strict=True) if k == g]
        assert within == sorted(within, reverse=True)


def test_secondary_captures_read_back_with_the_patient_and_new_uids(
    explained: tuple[Path, str], site: Path
) -> None:
    captures = sorted((explained[0] / "dicom").glob("*.dcm"))
    assert len(captures) == IMAGES
    sources = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in site.glob("*.dcm")}
    series = set()
    for path in captures:
        capture = pydicom.dcmread(path)
        source = sources[capture.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert capture.SOPClassUID == SECONDARY_CAPTURE
        assert capture.pixel_array.shape == (capture.Rows, capture.Columns, 3)
        assert capture.PatientID == source.PatientID
        assert capture.StudyInstanceUID == source.StudyInstanceUID
        assert capture.SOPInstanceUID not in sources
        assert capture.SeriesInstanceUID != source.SeriesInstanceUID
        assert "InstitutionName" not in capture and "Manufacturer" not in capture
        series.add(capture.SeriesInstanceUID)
    assert len(series) == 1


def test_a_multiclass_model_gets_a_map_per_class(tmp_path: Path) -> None:
    (site,) = generate_sites(
        tmp_path / "sites", SynthConfig(sites=1, images_per_site=10, seed=2, task="multiclass")
    )
    classes = list(MULTICLASS_CLASSES)
    model = build_model("small-cnn", seed=0, outputs=len(classes))
    save_checkpoint(
        tmp_path / "mc.pt", "small-cnn", model.state_dict(), task="multiclass", classes=classes
    )
    from fedscan.cli.explain import ExplainRequest, _records
    from fedscan.common.explain import ExplainSettings
    from fedscan.common.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tmp_path / "mc.pt")
    request = ExplainRequest(tmp_path / "mc.pt", f"dicom:{site}", tmp_path / "out", limit=3)
    records = _records(model, meta, request, ExplainSettings(methods=("gradcam", "occlusion")))
    assert len(records) == 3
    for record in records:
        assert record.classes == tuple(classes) and len(record.truth) == 1
        assert sorted(record.maps) == sorted(
            (method, name) for method in ("gradcam", "occlusion") for name in classes
        )
        assert all(found.shape == (64, 64) for found in record.maps.values())


def _error(arguments: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["explain", *arguments])
    return result.exit_code, result.output.strip()


def test_errors_are_one_actionable_line(tmp_path: Path, site: Path) -> None:
    out = ["--out", str(tmp_path / "maps")]
    code, text = _error(["--checkpoint", str(tmp_path / "no.pt"), "--data", f"dicom:{site}", *out])
    assert code == 2 and "needs both no.pt and no.json" in text and "\n" not in text
    save_checkpoint(tmp_path / "svm.pt", "hog-svm", build_model("hog-svm").state_dict())
    code, text = _error(["--checkpoint", str(tmp_path / "svm.pt"), "--data", f"dicom:{site}", *out])
    assert code == 2 and "no 2-D convolution layer" in text
    save_checkpoint(tmp_path / "cnn.pt", "small-cnn", build_model("small-cnn").state_dict())
    (tmp_path / "empty").mkdir()
    cnn = ["--checkpoint", str(tmp_path / "cnn.pt"), *out]
    code, text = _error([*cnn, "--data", f"dicom:{tmp_path / 'empty'}"])
    assert code == 2 and "is empty" in text and "fedscan data check" in text
    code, text = _error([*cnn, "--data", f"dicom:{site}", "--methods", "lime"])
    assert code == 2 and "Unknown explanation method(s) lime" in text
    assert not (tmp_path / "maps").exists()


def _chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.mark.slow
def test_the_index_page_renders_in_headless_chromium(explained: tuple[Path, str]) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    page = explained[0] / "index.html"
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<tr class=") == IMAGES and "fedscan explain" in dom


def test_a_segmentation_model_shows_its_predicted_mask(tmp_path: Path, site: Path) -> None:
    save_checkpoint(
        tmp_path / "unet.pt", "unet", build_model("unet", seed=0).state_dict(), task="segmentation"
    )
    out = tmp_path / "maps"
    result = CliRunner().invoke(
        app,
        ["explain", "--checkpoint", str(tmp_path / "unet.pt"), "--data", f"dicom:{site}"]
        + ["--out", str(out), "--limit", "3"],
    )
    assert result.exit_code == 0, result.output
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert "Maps: predicted mask." in (out / "index.html").read_text()


def test_evaluate_explain_writes_the_maps_beside_its_metrics(site: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "final.pt"
    save_checkpoint(checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict())
    command = ["evaluate", "--checkpoint", str(checkpoint), "--data", f"dicom:{site}"]
    result = CliRunner().invoke(
        app, [*command, "--device", "cpu", "--explain", str(tmp_path / "m")]
    )
    assert result.exit_code == 0, result.output
    assert '"explanations"' in result.output and (tmp_path / "m" / "index.html").is_file()
    assert len(list((tmp_path / "m" / "overlays").glob("*.png"))) == IMAGES
