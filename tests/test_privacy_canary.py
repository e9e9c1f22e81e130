"""Canaries: identifiers, folder names, pixel patterns and exception texts planted at the sites
must appear nowhere the coordinator can see — its messages (as wire bytes), logs and run
directory. ``fedscan explain``'s maps, pages and Secondary Captures likewise: it opens no
connection, and nothing it wrote reaches a federation the same site then serves."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flwr.common.serde import message_to_proto
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.client.app import make_client_app
from fedscan.client.audit import AUDIT_FILE, AuditLog
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import DataError
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.rundir import RunDirectory
from tests.helpers import LoopbackGrid, site_resolver

PIXEL_CANARY = np.array([1234, 4321, 1111, 3333, 2222, 4444, 1357, 2468] * 4, dtype=np.uint16)


def plant_canaries(source: Path, target: Path, site: int) -> list[bytes]:
    """Copy a synthetic site, rewriting every header and one pixel row with canaries."""
    shutil.copytree(source, target)
    for i, path in enumerate(sorted(target.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = f"CANARYNAME^S{site}X{i}", f"CANARYPID{site}{i:04d}"
        ds.AccessionNumber, ds.InstitutionName = f"CANARYACC{site}{i}", "CANARY GENERAL HOSPITAL"
        ds.StudyInstanceUID = f"1.2.999.4242.{site}.{i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.999.4343.{site}.{i}"
        pixels = ds.pixel_array.copy()
        row = PIXEL_CANARY[: pixels.shape[1]] >> (16 - int(ds.BitsStored))
        pixels[0, : row.size] = row.astype(pixels.dtype)
        ds.PixelData = pixels.tobytes()
        ds.save_as(path)
    first = pydicom.dcmread(sorted(target.glob("*.dcm"))[0])
    return [
        b"CANARYNAME",
        b"CANARYPID",
        b"CANARYACC",
        b"CANARY GENERAL",
        b"1.2.999.4242",
        b"1.2.999.4343",
        target.name.encode(),
        first.pixel_array[0, :16].tobytes(),
    ]


class LeakySource(FolderSource):
    """A site whose loader fails with its secrets in the exception text."""

    def load(self, size: int, *, masks: bool = False, scheme=None):
        raise RuntimeError(f"cannot open {self.site_dir}/CANARYEXCEPTION-RuntimeError")


class LeakyDataSource(FolderSource):
    def load(self, size: int, *, masks: bool = False, scheme=None):
        raise DataError(f"patient CANARYDATAERROR in {self.site_dir} is unreadable")


class RecordingGrid(LoopbackGrid):
    def send_and_receive(self, messages, *, timeout=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.wire = getattr(self, "wire", []) + [
            message_to_proto(reply).SerializeToString() for reply in replies
        ]
        return replies


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_no_canary_reaches_the_coordinator(
    flower_identity,
    synthetic_sites: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    task: str,
) -> None:
    canaries = [b"CANARYEXCEPTION", b"CANARYDATAERROR", b"canary-vault"]
    sources = []
    for site in range(2):
        folder = tmp_path / "canary-vault" / f"canary-folder-{site}"
        canaries += plant_canaries(synthetic_sites[site], folder, site)
        sources.append(FolderSource(f"site-{site}", str(folder)))
    sources += [
        LeakySource("site-2", str(tmp_path / "canary-vault" / "x")),
        LeakyDataSource("site-3", str(tmp_path / "canary-vault" / "y")),
    ]
    grid = RecordingGrid(
        make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu"), 4
    )
    segmentation = task == "segmentation"  # the masks travel with the copied folders
    config = RunConfig(
        rounds=2,
        min_sites=2,
        cross_site=not segmentation,
        train=TrainSettings(
            local_epochs=1,
            batch_size=8,
            augment=False,
            task=task,
            model="unet" if segmentation else "small-cnn",
        ),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    with caplog.at_level(logging.DEBUG):
        result = run_federation(
            grid, config, RunDirectory.create(tmp_path / "coordinator" / "runs")
        )
    assert sorted(result.history[-1]["train"]) == ["site-0", "site-1"]
    coordinator_logs = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith(("fedscan.client", "fedscan.common"))
    ).encode()
    run_files = b"".join(p.read_bytes() for p in result.run_dir.path.rglob("*") if p.is_file())
    # a train message per round and site (each also scoring the previous aggregate), the last
    # round's evaluation, then the cross-site fine-tune and evaluation; errors included
    assert len(grid.wire) == (2 + 1) * 4 + (0 if segmentation else 2 * 4)
    for canary in canaries:
        for where, blob in (
            ("messages", b"".join(grid.wire)),
            ("logs", coordinator_logs),
            ("run dir", run_files),
        ):
            assert canary not in blob, f"{canary!r} leaked into the coordinator's {where}"
    site_logs = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("fedscan.client")
    )
    assert "CANARYDATAERROR" in site_logs  # the site's own log keeps the details
    # The sites' audit logs may be shown to anyone auditing them: no identifier, path or pixel.
    audits = list((tmp_path / "state").rglob(AUDIT_FILE))
    assert len(audits) == 4 and all(AuditLog(a.parent).verify().ok for a in audits)
    audited = b"".join(a.read_bytes() for a in audits)
    for canary in canaries:
        assert canary not in audited, f"{canary!r} is in a site's audit log"


def _refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any IP connection or name lookup fails the test (local Unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"explain connected to {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    def lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"explain looked up {args!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket, "create_connection", lookup)


def _explain_canaries(maps: Path) -> list[bytes]:
    """Bytes only ``explain`` wrote: its captures' UIDs, its page's wording, each overlay's
    pixel data (a stretch of every PNG past its header)."""
    captures = sorted((maps / "dicom").glob("*.dcm"))
    overlays = sorted((maps / "overlays").glob("*.png"))
    assert captures and len(captures) == len(overlays)
    uids = {str(pydicom.dcmread(path).SOPInstanceUID) for path in captures}
    uids.add(str(pydicom.dcmread(captures[0]).SeriesInstanceUID))
    return [
        *(uid.encode() for uid in uids),
        b"fedscan explain",
        b"listed first",
        *(path.read_bytes()[200:232] for path in overlays),
    ]


def test_explain_outputs_stay_at_the_site(
    flower_identity,
    synthetic_sites: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a canary site, explained into a folder inside it (the worst place to put maps)
    folder = tmp_path / "canary-vault" / "canary-folder-0"
    canaries = plant_canaries(synthetic_sites[0], folder, 0)
    save_checkpoint(tmp_path / "final.pt", "small-cnn", build_model("small-cnn").state_dict())
    _refuse_network(monkeypatch)
    result = CliRunner().invoke(
        app,
        ["explain", "--checkpoint", str(tmp_path / "final.pt"), "--data", f"dicom:{folder}"]
        + ["--out", str(folder / "explain-maps"), "--dicom-sc", "--limit", "8"],
    )
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert b"CANARYPID" not in result.output.encode()  # it prints counts and paths only
    canaries += _explain_canaries(folder / "explain-maps")
    # Execute: the same site then serves a federation
    sources = [FolderSource("site-0", str(folder)), FolderSource("site-1", str(synthetic_sites[1]))]
    grid = RecordingGrid(
        make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu"), 2
    )
    config = RunConfig(
        rounds=1,
        min_sites=2,
        cross_site=False,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    with caplog.at_level(logging.DEBUG):
        found = run_federation(grid, config, RunDirectory.create(tmp_path / "coordinator"))
    # Assert: nothing explain wrote reached the coordinator
    local = ("fedscan.client", "fedscan.common", "fedscan.cli")  # the site's own loggers
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(local))
    run_files = b"".join(p.read_bytes() for p in found.run_dir.path.rglob("*") if p.is_file())
    assert grid.wire
    for canary in canaries:
        for where, blob in (("messages", b"".join(grid.wire)), ("logs", logs.encode()),
                            ("run dir", run_files)):  # fmt: skip
            assert canary not in blob, f"{canary!r} leaked into the coordinator's {where}"
