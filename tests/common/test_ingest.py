"""Site ingestion: labels keys, duplicates, PNG/JPEG, the decode-once cache, and what the summary
hides."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from fedscan.common.ingest.decode_pool import PoolSettings
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.rejections import Reason
from fedscan.common.ingest.scan import IngestSettings, ingest_site


def settings(
    cache: Path | None = None, *, verify: bool = False, **options: object
) -> IngestSettings:
    return IngestSettings(
        32,
        DecodeOptions(**options),
        PoolSettings(workers=2, timeout_s=30),
        str(cache) if cache else "",
        verify,
    )


def copy_site(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def drop_packed(cache: Path) -> None:
    """Remove the packed stores, so that a load reads the decode cache entry by entry."""
    for store in cache.glob("*/packed"):
        shutil.rmtree(store)


def reasons(report) -> dict[str, int]:
    return report.rejected_by_reason()


def test_nested_folders_and_files_without_extension_are_found(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site = copy_site(synthetic_sites[0], tmp_path / "site")
    rows = list(csv.DictReader(open(site / "labels.csv")))
    (site / "deep" / "er").mkdir(parents=True)
    moved = rows[0]["file"]
    (site / moved).rename(site / "deep" / "er" / "image")
    rows[0]["file"] = "deep/er/image"
    with open(site / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (site / ".DS_Store").write_bytes(b"finder junk")
    samples, report = ingest_site(site, LabelSpec(), settings())
    assert report.accepted == 40 and len(samples.labels) == 40
    assert report.ignored_hidden == 1


def test_dicom_attribute_keys_label_images(synthetic_sites: list[Path], tmp_path: Path) -> None:
    site = synthetic_sites[0]
    samples, report = ingest_site(site, LabelSpec(key="SOPInstanceUID"), settings())
    assert report.accepted == 40
    # The site's own labels.csv names its masks (kept out of the scan); this CSV does not, so a
    # copy of the site without them keeps the expected rejections to unlabelled images.
    site = Path(shutil.copytree(site, tmp_path / "site", ignore=shutil.ignore_patterns("masks")))
    by_patient = tmp_path / "patients.csv"
    patients = {pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in site.glob("*.dcm")}
    by_patient.write_text("PatientID,label\n" + "".join(f"{p},1\n" for p in sorted(patients)[:5]))
    samples, report = ingest_site(site, LabelSpec(csv=str(by_patient), key="PatientID"), settings())
    assert 5 <= report.accepted < 40 and set(samples.labels.tolist()) == {1}
    assert reasons(report) == {"LABEL_MISSING": 40 - report.accepted}


def test_missing_invalid_and_duplicate_images_are_coded(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site = copy_site(synthetic_sites[1], tmp_path / "site")
    files = sorted(site.glob("*.dcm"))
    shutil.copy(files[0], site / "copy-of-first.dcm")  # same bytes
    twin = pydicom.dcmread(files[1])
    twin.PatientName = "Changed^Name"  # same SOP Instance UID, different bytes
    twin.save_as(site / "zz-twin.dcm")
    labels = (site / "labels.csv").read_text().replace(f"{files[2].name},", f"{files[2].name},")
    lines = labels.splitlines()
    lines = [line.replace(",1", ",7") if line.startswith(files[3].name) else line for line in lines]
    lines += ["copy-of-first.dcm,,0", "zz-twin.dcm,,1"]
    (site / "labels.csv").write_text("\n".join(lines) + "\n")
    (site / "unlabelled.dcm").write_bytes(files[4].read_bytes()[:-2] + b"\x00\x01")
    _, report = ingest_site(site, LabelSpec(), settings())
    assert reasons(report) == {"DUPLICATE_INSTANCE": 2, "LABEL_INVALID": 1, "LABEL_MISSING": 1}
    assert report.accepted == 39


def test_png_and_jpeg_sites_use_the_same_convention(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["file,label,patient"]
    for i in range(12):
        image = (rng.random((40, 36)) * 255).astype(np.uint8)
        name = f"img{i}.png" if i % 2 else f"img{i}.jpg"
        Image.fromarray(image).save(tmp_path / name)
        rows.append(f"{name},{i % 2},pat{i // 3}")
    Image.fromarray((rng.random((40, 36)) * 65535).astype(np.uint16)).save(tmp_path / "deep16.png")
    rows.append("deep16.png,1,pat9")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    samples, report = ingest_site(tmp_path, LabelSpec(patient_column="patient"), settings())
    assert report.accepted == 13 and samples.images.shape == (13, 1, 32, 32)
    assert set(samples.groups) == {f"pat{i}" for i in range(4)} | {"pat9"}
    assert report.summary()["format"] == {"PNG": 7, "JPEG": 6}


def test_summary_holds_counts_but_no_paths_or_identifiers(synthetic_sites: list[Path]) -> None:
    _, report = ingest_site(synthetic_sites[0], LabelSpec(), settings())
    summary = json.dumps(report.summary())
    headers = [r.header for r in report.records]
    for secret in (
        [r.path for r in report.records]
        + [h["PatientID"] for h in headers]
        + [h["SOPInstanceUID"] for h in headers]
    ):
        assert secret not in summary
    local = json.loads(report.to_json())
    assert {f["path"] for f in local["files"]} == {r.path for r in report.records}


def test_warm_cache_decodes_nothing_and_gives_identical_samples(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cold_samples, cold = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    packed_samples, packed = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    drop_packed(cache)
    warm_samples, warm = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    assert cold.cache["misses"] == 40 and cold.cache["written"] == 40
    assert (packed.cache["packed"], packed.cache["hits"], packed.cache["misses"]) == (1, 0, 0)
    decoding = {k: v for k, v in warm.cache.items() if not k.startswith(("hash", "packed"))}
    assert decoding == {
        "hits": 40,
        "misses": 0,
        "rebuilt": 0,
        "written": 0,
        "write_errors": 0,
        "reused": 0,
    }
    assert warm.cache["hashed"] + warm.cache["hash_reused"] == 40  # tests/common/test_site_index
    for again in (packed_samples, warm_samples):
        assert np.array_equal(cold_samples.images, again.images)
        assert np.array_equal(cold_samples.labels, again.labels)
        assert (cold_samples.groups, cold_samples.keys) == (again.groups, again.keys)
    assert [asdict(r) for r in cold.records] == [asdict(r) for r in packed.records]


def test_a_changed_file_or_setting_invalidates_exactly_what_it_affects(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    site = copy_site(synthetic_sites[2], tmp_path / "site")
    cache = tmp_path / "cache"
    ingest_site(site, LabelSpec(), settings(cache))
    changed = sorted(site.glob("*.dcm"))[5]
    ds = pydicom.dcmread(changed)
    ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(changed)
    _, again = ingest_site(site, LabelSpec(), settings(cache))
    assert again.cache["misses"] == 1 and again.cache["reused"] == 39  # from the packed store
    _, other_setting = ingest_site(site, LabelSpec(), settings(cache, frames="all"))
    assert other_setting.cache["hits"] == 0


def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cold_samples, _ = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    entries = sorted(cache.rglob("*.entry"))
    damaged = bytearray(entries[3].read_bytes())
    damaged[-5] ^= 0xFF
    entries[3].write_bytes(bytes(damaged))
    entries[7].write_bytes(entries[7].read_bytes()[:50])
    drop_packed(cache)
    samples, report = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    assert report.cache["rebuilt"] == 2 and report.cache["hits"] == 38
    assert np.array_equal(samples.images, cold_samples.images)
    drop_packed(cache)
    _, healed = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    assert healed.cache["hits"] == 40


def test_rejections_are_cached_except_transient_ones(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"junk" * 40)
    (tmp_path / "labels.csv").write_text("file,label\njunk.dcm,1\n")
    ingest_site(tmp_path, LabelSpec(), settings(tmp_path / ".cache"))
    drop_packed(tmp_path / ".cache")
    _, again = ingest_site(tmp_path, LabelSpec(), settings(tmp_path / ".cache"))
    assert again.cache["hits"] == 1 and reasons(again) == {Reason.NOT_DICOM.value: 1}
