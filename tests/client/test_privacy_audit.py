"""`fedscan privacy audit` on a small synthetic hospital: the table, the JSON, the record kept in
the site's state folder (figures and counts only), the run settings it trains shadows with, and
one-line refusals of bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import stat
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.audit import AuditLog
from fedscan.client.ledger import PrivacyLedger, RunRecord
from fedscan.client.privacy_audit import AUDIT_DIR, audit_plan, latest_audit
from fedscan.client.site_config import load_site_config
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model

runner = CliRunner()


def _site_toml(folder: Path, data_dir: Path) -> Path:
    path = folder / "site.toml"
    path.write_text(
        f'[site]\nname = "st-audit"\nstate-dir = "{folder / "state"}"\n'
        f'[data]\ndir = "{data_dir}"\n'
        "[privacy]\nmax-epsilon-per-run = 6\nmax-epsilon-lifetime = 20\nmin-samples = 1\n"
    )
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(site.toml, final.pt of a one-round run beside its run-config.json, the image folder)."""
    folder = tmp_path_factory.mktemp("audit")
    (images,) = generate_sites(folder / "sites", SynthConfig(sites=1, images_per_site=100, seed=5))
    run = folder / "run"
    checkpoint = run / "final.pt"
    save_checkpoint(
        checkpoint, "small-cnn", build_model("small-cnn", seed=0).state_dict(), run_id="r-1"
    )
    flat = {"rounds": 1, "local-epochs": 1, "batch-size": 16, "cross-site": False}
    (run / "run-config.json").write_text(json.dumps({**flat, "epsilon": 8.0}))
    return _site_toml(folder, images), checkpoint, images


def _audit(site_toml: Path, checkpoint: Path, *extra: str) -> object:
    command = ["privacy", "audit", "--checkpoint", str(checkpoint), "--config", str(site_toml)]
    return runner.invoke(app, [*command, "--shadows", "2", "--device", "cpu", *extra])


def _identifiers(images: Path) -> set[str]:
    """Every file name, patient ID, name, accession number and UID of the site."""
    found = {images.name, str(images.parent)}
    for path in images.glob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {path.name, path.stem, str(header.PatientID), str(header.PatientName)}
        found |= {str(header.AccessionNumber), str(header.SOPInstanceUID)}
    with (images / "labels.csv").open() as handle:
        found |= {row["sop_instance_uid"] for row in csv.DictReader(handle)}
    return {value for value in found if value}


def test_audit_prints_the_table_and_keeps_only_figures_at_the_site(
    site: tuple[Path, Path, Path],
) -> None:
    site_toml, checkpoint, images = site
    result = _audit(site_toml, checkpoint)
    assert result.exit_code == 0, result.output
    for heading in ("attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "ε lower bound", "shadows"):
        assert heading in result.output
    assert "loss threshold" in result.output and "LiRA offline" in result.output
    assert "too few to resolve 0.1 % FPR" in result.output  # 25 non-members
    assert "DP at ε 6" in result.output  # the run's 8, capped by the site's policy
    (stored,) = (site_toml.parent / "state" / AUDIT_DIR).glob("*.json")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    text = stored.read_text()
    record = json.loads(text)
    assert stored.name.endswith(f"-{record['checkpoint_sha256'][:12]}.json")
    assert record["members"] + record["non_members"] == 100 and record["shadows"] == 2
    assert record["shadow_epochs"] == 1 and record["target_epsilon"] == 6.0
    for attack in record["attacks"]:
        assert f"{attack['members']}" in result.output and 0 <= attack["auc"] <= 1
        assert attack["fpr_resolved"] == {"0.001": False, "0.01": False}
    assert "/" not in text and "\\" not in text  # no path of any kind
    leaked = [value for value in _identifiers(images) if value in text]
    assert leaked == []


def test_json_output_is_the_record_latest_audit_returns(site: tuple[Path, Path, Path]) -> None:
    site_toml, checkpoint, _ = site
    result = _audit(site_toml, checkpoint, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == latest_audit(load_site_config(site_toml))
    assert [a["attack"] for a in printed["attacks"]] == ["loss threshold", "LiRA offline"]
    assert set(printed["attacks"][0]) >= {"auc", "tpr_at_fpr", "epsilon_lower_bound", "delta"}


def test_the_privacy_report_shows_the_latest_audit(site: tuple[Path, Path, Path]) -> None:
    site_toml, checkpoint, _ = site
    assert _audit(site_toml, checkpoint).exit_code == 0
    report = runner.invoke(app, ["privacy", "report", "--config", str(site_toml)])
    assert report.exit_code == 0, report.output
    assert "Last audit" in report.output and "LiRA offline: AUC" in report.output
    assert "Metric releases (validation images): policy dp" in report.output


def test_no_audit_yet_is_none(tmp_path: Path) -> None:
    assert latest_audit(load_site_config(_site_toml(tmp_path, tmp_path))) is None


def test_shadows_train_as_the_run_did_with_dp_from_the_ledger(
    site: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    site_toml, checkpoint, images = site
    config = load_site_config(_site_toml(tmp_path, images))
    meta = {"model": "small-cnn", "run_id": "r-7", "rounds": 4}
    plan = audit_plan(tmp_path / "final.pt", meta, config)  # no run-config.json beside it
    assert plan.epochs == 4 * 3 and plan.privacy.enabled  # 4 rounds × the default 3 epochs
    assert plan.privacy.epsilon == 6.0 and "default" in plan.source
    PrivacyLedger(config.state_dir).start_run(RunRecord("r-7", 1.3, 2.5, 1e-6, 0.7, 4))
    plan = audit_plan(tmp_path / "final.pt", meta, config)
    assert (plan.privacy.epsilon, plan.privacy.delta, plan.privacy.clip_norm) == (2.5, 1e-6, 0.7)
    assert "ledger recorded" in plan.source
    unserved = audit_plan(tmp_path / "final.pt", {**meta, "run_id": "r-8"}, config)
    assert "no release of this run" in unserved.source  # a DP run this site never trained in
    assert audit_plan(checkpoint, meta, config).epochs == 1  # the run directory's settings


def test_bad_input_is_refused_in_one_line(
    site: tuple[Path, Path, Path], synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site_toml, checkpoint, _ = site
    unet = tmp_path / "seg" / "final.pt"
    save_checkpoint(unet, "unet", build_model("unet", seed=0).state_dict())
    cases = [
        (_audit(site_toml, tmp_path / "missing.pt"), "needs both"),
        (_audit(site_toml, unet), "covers classifiers"),
        (_audit(site_toml, checkpoint, "--shadows", "3"), "even number"),
        (_audit(_site_toml(tmp_path, synthetic_sites[0]), checkpoint), "at least 20"),
    ]
    for result, message in cases:
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_exported_summary_holds_figures_only_and_is_logged_before_it_is_written(
    site: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # Setup
    site_toml, checkpoint, images = site
    assert _audit(site_toml, checkpoint).exit_code == 0
    out = tmp_path / "summary.json"
    export = ["privacy", "audit-export", "--config", str(site_toml), "--out", str(out)]
    other = tmp_path / "other.pt"
    save_checkpoint(other, "small-cnn", build_model("small-cnn", seed=1).state_dict(), run_id="x")
    # Execute
    result = runner.invoke(app, [*export, "--checkpoint", str(checkpoint)])
    refused = runner.invoke(
        app, [*export[:-1], str(tmp_path / "no.json"), "--checkpoint", str(other)]
    )
    # Assert
    assert result.exit_code == 0, result.output
    text = out.read_text()
    document = json.loads(text)
    assert (document["site"], document["run_id"]) == ("st-audit", "r-1")
    assert [a["attack"] for a in document["attacks"]] == ["loss threshold", "LiRA offline"]
    assert not any(secret in text for secret in _identifiers(images) | {str(site_toml.parent)})
    logged = [e for e in AuditLog(site_toml.parent / "state").entries() if e["event"] == "export"]
    assert [e["summary"] for e in logged] == [hashlib.sha256(out.read_bytes()).hexdigest()]
    assert refused.exit_code != 0 and "no audit of this checkpoint" in refused.output
    assert not (tmp_path / "no.json").exists()


def test_a_damaged_audit_record_is_not_exported(tmp_path: Path) -> None:
    # Setup: a site whose only audit record lost its figures
    state = tmp_path / "state"
    (state / AUDIT_DIR).mkdir(parents=True)
    (state / AUDIT_DIR / "20261207T000000Z-abc.json").write_text('{"checkpoint_sha256": "ab"}')
    site_toml = _site_toml(tmp_path, tmp_path)
    out = tmp_path / "summary.json"
    # Execute
    result = runner.invoke(
        app, ["privacy", "audit-export", "--config", str(site_toml), "--out", str(out)]
    )
    # Assert
    assert result.exit_code != 0 and "incomplete or damaged" in result.output
    assert not out.exists()
