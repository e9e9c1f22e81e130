"""The site index: a warm load hashes only files whose stat changed, exactly those; a racy, damaged
or verified index is never trusted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from fedscan.common.ingest import index
from fedscan.common.ingest.index import SiteIndex, index_path
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.scan import ingest_site
from tests.common.test_ingest import copy_site, settings


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch):
    """Move the index's clock forward: what was written before then has settled (not racy), as
    an archive's files have."""

    def move(seconds: float) -> None:
        monkeypatch.setattr(index, "_now_ns", lambda: time.time_ns() + int(seconds * 1e9))

    return move


def _rewrite_pixels(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(path)


def test_a_settled_site_hashes_nothing_and_a_change_hashes_exactly_its_file(
    synthetic_sites: list[Path], tmp_path: Path, later
) -> None:
    # Setup
    site, cache = copy_site(synthetic_sites[0], tmp_path / "site"), tmp_path / "cache"
    later(10)
    cold_samples, cold = ingest_site(site, LabelSpec(), settings(cache))
    # Execute / Assert: nothing changed
    warm_samples, warm = ingest_site(site, LabelSpec(), settings(cache))
    assert (cold.cache["hashed"], warm.cache["hashed"], warm.cache["hash_reused"]) == (40, 0, 40)
    assert np.array_equal(cold_samples.images, warm_samples.images)
    # One file changed, one removed, one added
    files = sorted(site.glob("*.dcm"))
    _rewrite_pixels(files[5])
    files[7].unlink()
    added = pydicom.dcmread(files[9])
    added.SOPInstanceUID = generate_uid()
    added.save_as(site / "added.dcm")
    with (site / "labels.csv").open("a") as labels:
        labels.write(f"added.dcm,{added.SOPInstanceUID},1,\n")
    later(20)
    _, changed = ingest_site(site, LabelSpec(), settings(cache))
    assert (changed.cache["hashed"], changed.cache["hash_reused"]) == (2, 38)
    assert changed.cache["misses"] == 2  # the changed and the added file are decoded, no other
    kept = index._read(index_path(cache, site))
    assert len(kept) == 40 and "added.dcm" in kept and files[7].name not in kept


def test_a_same_size_rewrite_with_its_old_mtime_is_still_seen(tmp_path: Path, later) -> None:
    # Setup
    file = tmp_path / "a.bin"
    file.write_bytes(b"a" * 64)
    later(10)
    first = SiteIndex.open(tmp_path / "index.json")
    before = first.digest(file, "a.bin")
    first.save()
    status = os.stat(file)
    # Execute: same size, mtime put back; only the ctime (which no one can set) moves
    file.write_bytes(b"b" * 64)
    os.utime(file, ns=(status.st_atime_ns, status.st_mtime_ns))
    again = SiteIndex.open(tmp_path / "index.json")
    # Assert
    assert again.digest(file, "a.bin") != before and again.hashed == 1


def test_files_written_just_before_their_hashing_are_hashed_again(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # A file changed within a timestamp tick of its hashing could change again unseen: until its
    # ctime is RACY_NS older than its hashing, its entry is not trusted.
    site, cache = copy_site(synthetic_sites[1], tmp_path / "site"), tmp_path / "cache"
    ingest_site(site, LabelSpec(), settings(cache))
    _, again = ingest_site(site, LabelSpec(), settings(cache))
    assert again.cache["hashed"] == 40


def test_verify_and_a_damaged_index_hash_everything_then_the_index_heals(
    synthetic_sites: list[Path], tmp_path: Path, later, caplog: pytest.LogCaptureFixture
) -> None:
    # Setup
    cache = tmp_path / "cache"
    site = copy_site(synthetic_sites[2], tmp_path / "site")
    later(10)
    ingest_site(site, LabelSpec(), settings(cache))
    # Execute / Assert: --verify trusts no entry
    _, verified = ingest_site(site, LabelSpec(), settings(cache, verify=True))
    assert verified.cache["hashed"] == 40
    stored = index_path(cache, site)
    damaged = bytearray(stored.read_bytes())
    damaged[-3] ^= 0x20
    stored.write_bytes(bytes(damaged))
    touched = site / "labels.csv"  # a stat change: the load reads the index (no quick answer)
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1000))
    _, after_damage = ingest_site(site, LabelSpec(), settings(cache))
    assert after_damage.cache["hashed"] == 40 and "site index was damaged" in caplog.text
    _, healed = ingest_site(site, LabelSpec(), settings(cache))
    assert healed.cache["hashed"] == 0
    assert oct(stored.stat().st_mode & 0o777) == "0o600"  # it names the site's files
