"""The packed store answers a warm load with one memory-mapped file, and only while nothing its
samples depend on has changed; a damaged store is rebuilt, never trusted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from fedscan.common.ingest import index
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.pack_writer import PackWriter
from fedscan.common.ingest.scan import ingest_site
from tests.common.test_ingest import copy_site, settings


def _store(cache: Path) -> Path:
    (folder,) = cache.glob("*/packed/*")
    return folder


def test_a_warm_load_is_memory_mapped_and_a_label_change_rebuilds(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Setup
    site, cache = copy_site(synthetic_sites[0], tmp_path / "site"), tmp_path / "cache"
    cold, _ = ingest_site(site, LabelSpec(), settings(cache))
    # Execute
    warm, report = ingest_site(site, LabelSpec(), settings(cache))
    csv = site / "labels.csv"
    rows = csv.read_text().splitlines()
    first = rows[1].split(",")
    first[2] = str(1 - int(first[2]))  # flip the first image's label
    csv.write_text("\n".join([rows[0], ",".join(first), *rows[2:]]) + "\n")
    relabelled, after = ingest_site(site, LabelSpec(), settings(cache))
    # Assert
    assert report.cache["packed"] == 1 and isinstance(warm.images, np.memmap)
    assert isinstance(cold.images, np.memmap)  # the cold load streamed to disk as well
    assert not warm.images.flags.writeable
    assert after.cache["packed"] == 0 and after.cache["reused"] == 40  # from the old generation
    assert after.cache["hits"] == after.cache["misses"] == 0
    assert relabelled.labels[0] == 1 - warm.labels[0]
    assert np.array_equal(relabelled.labels[1:], warm.labels[1:])


@pytest.mark.parametrize("damage", ["meta", "truncated", "content"])
def test_a_damaged_store_is_rebuilt_not_trusted(
    damage: str, synthetic_sites: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup
    cache = tmp_path / "cache"
    cold, _ = ingest_site(synthetic_sites[1], LabelSpec(), settings(cache))
    expected = np.array(cold.images)  # a copy: the cold load's arrays map the file damaged below
    folder = _store(cache)
    (images,) = folder.glob("*.images.bin")
    target = folder / "meta.json" if damage == "meta" else images
    blob = bytearray(target.read_bytes())
    if damage == "truncated":
        del blob[-1000:]
    else:
        blob[-7] ^= 0x01  # the meta's JSON, or a pixel's lowest bits
    target.write_bytes(bytes(blob))
    # Execute: the content change is caught by --verify (a warm load reads no pixel to check it)
    loaded, report = ingest_site(synthetic_sites[1], LabelSpec(), settings(cache, verify=True))
    # Assert
    assert report.cache["packed"] == 0 and "packed store" in caplog.text
    assert np.array_equal(loaded.images, expected)
    _, healed = ingest_site(synthetic_sites[1], LabelSpec(), settings(cache))
    assert healed.cache["packed"] == 1
    assert len(list(_store(cache).glob("*.bin"))) == 1  # the damaged generation is gone


def _add_file(site: Path, source: str, name: str) -> None:
    """A new DICOM (``source``'s pixels, its own UIDs and patient) with its labels row."""
    dataset = pydicom.dcmread(site / source)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.PatientID = "ADDED-1"
    dataset.PixelData = (dataset.pixel_array // 3).astype(dataset.pixel_array.dtype).tobytes()
    dataset.save_as(site / name)
    with open(site / "labels.csv", "a") as handle:
        handle.write(f"{name},{dataset.SOPInstanceUID},1,\n")


def test_a_rebuild_copies_unchanged_frames_and_reads_only_the_changed_files(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Setup: one file changed, one added, one removed since the store was written
    site, cache = copy_site(synthetic_sites[0], tmp_path / "site"), tmp_path / "cache"
    ingest_site(site, LabelSpec(), settings(cache))
    files = sorted(site.glob("*.dcm"))
    changed = pydicom.dcmread(files[5])
    changed.PixelData = (changed.pixel_array // 2).astype(changed.pixel_array.dtype).tobytes()
    changed.save_as(files[5])
    files[9].unlink()
    _add_file(site, files[3].name, "ZZ-added.dcm")
    # Execute
    rebuilt, report = ingest_site(site, LabelSpec(), settings(cache))
    expected, reference = ingest_site(site, LabelSpec(), settings())  # no cache: decoded anew
    _, next_load = ingest_site(site, LabelSpec(), settings(cache))
    # Assert: exactly the changed and the added file read; the samples as a cold load gives them
    assert (report.cache["reused"], report.cache["misses"], report.cache["hits"]) == (38, 2, 0)
    assert report.accepted == reference.accepted == 40
    assert np.array_equal(rebuilt.images, expected.images)
    assert np.array_equal(rebuilt.labels, expected.labels)
    assert (rebuilt.groups, rebuilt.keys) == (expected.groups, expected.keys)
    assert [r.header for r in report.records] == [r.header for r in reference.records]
    assert next_load.cache["packed"] == 1
    assert len(list(_store(cache).glob("*.sources.json"))) == 1  # the old generation's is gone


@pytest.mark.parametrize("damage", ["sources", "arrays"])
def test_a_damaged_previous_generation_is_not_reused(
    damage: str, synthetic_sites: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup: the labels change (a rebuild), and the old generation is damaged
    site, cache = copy_site(synthetic_sites[1], tmp_path / "site"), tmp_path / "cache"
    cold, _ = ingest_site(site, LabelSpec(), settings(cache))
    expected = np.array(cold.images)
    (target,) = _store(cache).glob("*.sources.json" if damage == "sources" else "*.images.bin")
    blob = bytearray(target.read_bytes())
    blob[-3] ^= 0x01  # the sources' JSON, or a pixel's lowest bits (caught by --verify)
    target.write_bytes(bytes(blob))
    _add_file(site, "IM00000.dcm", "ZZ-added.dcm")
    # Execute
    loaded, report = ingest_site(site, LabelSpec(), settings(cache, verify=damage == "arrays"))
    # Assert: every unchanged frame read from the decode cache instead
    assert report.cache["reused"] == 0 and report.cache["hits"] == 40
    assert "packed store" in caplog.text
    assert np.array_equal(loaded.images[:40], expected)


def test_a_changed_mask_rebuilds_a_segmentation_store(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Setup
    site, cache = copy_site(synthetic_sites[2], tmp_path / "site"), tmp_path / "cache"
    before, _ = ingest_site(site, LabelSpec(), settings(cache), masks=True)
    mask = sorted((site / "masks").glob("*.png"))[0]
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).resize(Image.open(mask).size).save(mask)
    # Execute
    after, report = ingest_site(site, LabelSpec(), settings(cache), masks=True)
    # Assert
    assert report.cache["packed"] == 0
    assert before.masks is not None and after.masks is not None
    assert not np.array_equal(before.masks[0], after.masks[0]) and after.masks[0].all()


def test_a_store_that_cannot_be_written_costs_memory_not_the_ingestion(
    synthetic_sites: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Setup: the disk fills up after the first file's frames
    expected, _ = ingest_site(synthetic_sites[0], LabelSpec(), settings())  # no cache
    writes = []

    def full_disk(self, part, frames) -> None:
        writes.append(len(frames))
        if len(writes) > 1:
            raise OSError(28, "No space left on device")
        original(self, part, frames)

    original = PackWriter._write
    monkeypatch.setattr(PackWriter, "_write", full_disk)
    cache = tmp_path / "cache"
    # Execute
    samples, report = ingest_site(synthetic_sites[0], LabelSpec(), settings(cache))
    # Assert: every sample, in memory; no store committed, so the next load rebuilds it
    assert report.accepted == 40 and not isinstance(samples.images, np.memmap)
    assert np.array_equal(samples.images, expected.images)
    assert not list(cache.glob("*/packed/*/meta.json")) and not list(cache.glob("*/packed/*/*.bin"))


def test_an_unchanged_settled_folder_is_answered_by_its_quick_key(
    synthetic_sites: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Setup: files written 10 s before "now" have settled, as an archive's have
    site, cache = copy_site(synthetic_sites[0], tmp_path / "site"), tmp_path / "cache"
    monkeypatch.setattr(index, "_now_ns", lambda: time.time_ns() + 10**10)
    cold, full = ingest_site(site, LabelSpec(), settings(cache))
    # Execute
    warm, quick = ingest_site(site, LabelSpec(), settings(cache))
    touched = next(site.glob("*.dcm"))  # same bytes, a new mtime: the index path, nothing decoded
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1000))
    _, after_touch = ingest_site(site, LabelSpec(), settings(cache))
    _, quick_again = ingest_site(site, LabelSpec(), settings(cache))
    # Assert
    assert quick.tally is not None and after_touch.tally is None and quick_again.tally is not None
    assert after_touch.cache["hashed"] == 1 and after_touch.cache["packed"] == 1
    assert np.array_equal(np.asarray(warm.images), np.asarray(cold.images))
    assert warm.keys == cold.keys and np.array_equal(warm.labels, cold.labels)
    assert quick.summary() | {"cache": None, "elapsed_s": 0} == full.summary() | {
        "cache": None,
        "elapsed_s": 0,
    }
    assert list(quick.records) == list(full.records)  # read on first use


def test_a_racy_folder_never_takes_the_quick_path(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Setup: the copied files are seconds old: a same-tick rewrite could keep their stat
    site, cache = copy_site(synthetic_sites[1], tmp_path / "site"), tmp_path / "cache"
    ingest_site(site, LabelSpec(), settings(cache))
    # Execute
    _, warm = ingest_site(site, LabelSpec(), settings(cache))
    # Assert
    assert warm.tally is None and warm.cache["packed"] == 1
