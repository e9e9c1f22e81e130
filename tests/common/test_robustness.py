"""Nothing a file can do stops ingestion: pydicom's own test files, mutants, hung and crashed
decoders.

``FEDSCAN_MUTANTS=2000 pytest tests/common/test_robustness.py`` runs a larger mutant population
outside CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.common.ingest import decode_pool
from fedscan.common.ingest.decode_pool import DecodePool, PoolSettings
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.rejections import Reason

CODES = {reason.value for reason in Reason}
MUTANT_SOURCES = (
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "examples_ybr_color.dcm",
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_rle_2frame.dcm",
)


def label_everything(site: Path) -> None:
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    (site / "labels.csv").write_text(
        "file,label\n" + "".join(f"{f},{i % 2}\n" for i, f in enumerate(files))
    )


def test_every_file_pydicom_ships_goes_through_data_check(tmp_path: Path) -> None:
    site = tmp_path / "pydicom-files"
    shutil.copytree(Path(pydicom.__file__).parent / "data" / "test_files", site)
    label_everything(site)
    count = sum(1 for p in site.rglob("*") if p.is_file()) - 1
    result = CliRunner().invoke(
        app,
        [
            "data",
            "check",
            str(site),
            "--no-cache",
            "--frames",
            "all",
            "--report",
            str(tmp_path / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Rejected files" in result.output
    files = json.loads((tmp_path / "report.json").read_text())["files"]
    assert len(files) == count
    outcomes = Counter(f["reason"] or "ACCEPTED" for f in files)
    assert set(outcomes) <= CODES | {"ACCEPTED"}, outcomes
    print(f"{count} pydicom files: {dict(outcomes)}")
    # MR_small in six encodings shares one SOP Instance UID: the first is kept, the rest are
    # duplicates
    assert outcomes["DUPLICATE_INSTANCE"] >= 5
    assert (
        outcomes["ACCEPTED"] >= 55
        and outcomes["NOT_DICOM"] >= 5
        and outcomes["NON_IMAGE_OBJECT"] >= 10
    )
    assert "DECODE_TIMEOUT" not in outcomes


def mutate(data: bytes, kind: int, rng: np.random.Generator, tmp: Path) -> bytes:
    """One of five damage kinds: byte flips, truncation, deleted tags, inflated size, wrong
    syntax."""
    if kind == 0:
        blob = bytearray(data)
        for offset in rng.integers(0, len(blob), size=int(rng.integers(1, 24))):
            blob[offset] ^= int(rng.integers(1, 256))
        return bytes(blob)
    if kind == 1:
        return data[: int(rng.integers(0, len(data)))]
    scratch = tmp / "scratch.dcm"
    scratch.write_bytes(data)
    ds = pydicom.dcmread(scratch)
    if kind == 2:
        for keyword in rng.choice(
            ["PixelData", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel"],
            size=int(rng.integers(1, 3)),
            replace=False,
        ):
            if keyword in ds:
                delattr(ds, str(keyword))
    elif kind == 3:
        ds.Rows, ds.Columns = (
            int(rng.choice([0, 1, 65535, 40000])),
            int(rng.choice([2, 65535, 3000])),
        )
        ds.NumberOfFrames = int(rng.choice([1, 500, 99999]))
    else:
        uid = str(
            rng.choice(
                [
                    "1.2.840.10008.1.2.4.90",
                    "1.2.840.10008.1.2.5",
                    "1.2.840.10008.1.2",
                    "1.2.840.10008.1.2.2",
                    "1.2.840.10008.1.2.4.50",
                    "1.2.3.4.5",
                    "1.2.840.10008.1.2.4.201",
                ]
            )
        )
        return replace_transfer_syntax(data, uid)
    ds.save_as(scratch)
    return scratch.read_bytes()


def replace_transfer_syntax(data: bytes, uid: str) -> bytes:
    """Rewrite (0002,0010) in the raw bytes (pydicom rightly refuses to write such a lie)."""
    at = data.index(b"\x02\x00\x10\x00UI")
    old_length = int.from_bytes(data[at + 6 : at + 8], "little")
    value = uid.encode() + b"\x00" * (len(uid) % 2)
    data = data[: at + 6] + len(value).to_bytes(2, "little") + value + data[at + 8 + old_length :]
    group = data.index(b"\x02\x00\x00\x00UL")
    length = int.from_bytes(data[group + 8 : group + 12], "little") + len(value) - old_length
    return data[: group + 8] + length.to_bytes(4, "little") + data[group + 12 :]


def test_mutated_dicoms_never_crash_or_hang_ingestion(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    count = int(os.environ.get("FEDSCAN_MUTANTS", "200"))
    rng = np.random.default_rng(2026)
    sources = [Path(get_testdata_file(name)) for name in MUTANT_SOURCES] + sorted(
        synthetic_sites[1].glob("*.dcm")
    )[:3]
    site = tmp_path / "mutants"
    site.mkdir()
    for i in range(count):
        original = sources[i % len(sources)].read_bytes()
        (site / f"mutant-{i:05d}.dcm").write_bytes(mutate(original, i % 5, rng, tmp_path))
    jobs = _jobs({path.name: path for path in site.iterdir()})
    with DecodePool(PoolSettings(workers=2, timeout_s=30.0)) as pool:
        outcomes = Counter(
            getattr(outcome, "code", "ACCEPTED")
            for _, outcome in pool.decode(jobs, DecodeOptions())
        )
    print(f"{count} mutants: {dict(outcomes)}")
    assert sum(outcomes.values()) == count
    assert set(outcomes) <= CODES | {"ACCEPTED"}, outcomes
    assert "DECODE_TIMEOUT" not in outcomes
    assert outcomes["ACCEPTED"] < count  # the mutations did damage


def _jobs(paths: dict[str, Path]) -> list[tuple[str, Path]]:
    return sorted(paths.items())


def test_a_hung_decoder_is_stopped_and_ingestion_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    original = decode_pool._Worker.send

    def send_then_freeze(worker: decode_pool._Worker, job: tuple, options: DecodeOptions) -> None:
        original(worker, job, options)
        if job[0] == "b-victim":
            os.kill(worker.process.pid, signal.SIGSTOP)  # the decoder stops answering

    monkeypatch.setattr(decode_pool._Worker, "send", send_then_freeze)
    files = {
        "a": "MR_small.dcm",
        "b-victim": "CT_small.dcm",
        "c": "MR_small_RLE.dcm",
        "d": "JPEG2000.dcm",
    }
    jobs = _jobs({key: Path(get_testdata_file(name)) for key, name in files.items()})
    with DecodePool(PoolSettings(workers=1, timeout_s=2.0)) as pool:
        outcomes = dict(pool.decode(jobs, DecodeOptions()))
    assert outcomes["b-victim"].reason is Reason.DECODE_TIMEOUT
    assert all(not hasattr(outcomes[key], "reason") for key in ("a", "c", "d"))


def test_a_crashed_decoder_costs_one_file(monkeypatch: pytest.MonkeyPatch) -> None:
    original = decode_pool._Worker.send

    def send_then_die(worker: decode_pool._Worker, job: tuple, options: DecodeOptions) -> None:
        original(worker, job, options)
        if job[0] == "b-victim":
            worker.process.send_signal(signal.SIGSEGV)

    monkeypatch.setattr(decode_pool._Worker, "send", send_then_die)
    files = {"a": "MR_small.dcm", "b-victim": "CT_small.dcm", "c": "MR_small_RLE.dcm"}
    with DecodePool(PoolSettings(workers=2)) as pool:
        outcomes = dict(
            pool.decode(
                _jobs({k: Path(get_testdata_file(n)) for k, n in files.items()}), DecodeOptions()
            )
        )
    assert outcomes["b-victim"].reason is Reason.DECODE_FAILED
    assert not hasattr(outcomes["a"], "reason") and not hasattr(outcomes["c"], "reason")
