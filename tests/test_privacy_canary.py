"""Canaries: identifiers, folder names, pixel patterns and exception texts planted at the sites
must appear nowhere the coordinator can see — its messages (as wire bytes), logs and run
directory."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flwr.common.serde import message_to_proto

from fedscan.client.app import make_client_app
from fedscan.client.audit import AUDIT_FILE, AuditLog
from fedscan.common.config import RunConfig, TrainSettings
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import DataError
from fedscan.common.privacy import PrivacyConfig
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
