"""Archive scale: how long a site's per-message load takes once its archive is ingested.

    .venv/bin/python bench/archive.py --files 10000 100000 --large 300

For each size, one synthetic site of that many distinct DICOM files (1 000 rendered cases, the rest
byte-level copies with their own SOP Instance UID and patient), then each step in a fresh process,
as a ClientApp message would meet it: the cold ingestion (every file hashed and decoded), a warm
load (site index + packed store), a warm load without the packed store (one decode-cache entry per
image, as fedscan did before), a warm load after one file changed, after one file was added, after
it was removed again, and `--verify`. Prints one markdown row per step: wall seconds of the load,
files/s, files hashed, files decoded, files whose frames a rebuild copied from the previous store
generation, whether the packed store answered, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedscan.common.data.synth import SynthConfig, generate_site

SIZE = 28  # the stored samples' side: 100 000 images at 28² are 0.3 GB of float32
RENDERED = 1000


def make_archive(root: Path, files: int) -> Path:
    """``files`` distinct DICOMs: rendered cases and same-length byte-level UID variants."""
    site = root / f"archive-{files}"
    generate_site(site, 0, SynthConfig(sites=1, images_per_site=min(files, RENDERED), seed=0))
    with open(site / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, cases = rows[0], rows[1:]
    originals = [((site / row[0]).read_bytes(), row) for row in cases]
    extra = []
    for copy in range(files - len(cases)):
        blob, row = originals[copy % len(originals)]
        uid = row[1].encode()
        variant = uid[:-7] + f"{copy:07d}".encode()  # the same length: no element length changes
        name = f"copy/{copy // 1000:03d}/CP{copy:07d}.dcm"
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(blob.replace(uid, variant))
        extra.append([name, variant.decode(), row[2], row[3]])
    with open(site / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *cases, *extra])
    return site


def make_large(root: Path, files: int, side: int) -> Path:
    """``files`` distinct ``side``² 16-bit DICOMs (each a rendered case scaled up, with its own
    UIDs and a pixel of its own): the bytes of a radiograph archive at a small file count."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    site = make_archive(root, min(files, RENDERED))
    with open(site / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    for index, row in enumerate(rows[1 : files + 1]):
        dataset = pydicom.dcmread(site / row[0])
        scale = -(-side // min(dataset.Rows, dataset.Columns))
        pixels = np.kron(dataset.pixel_array, np.ones((scale, scale), np.uint16))[:side, :side]
        pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
        pixels[0, 0] = index  # distinct content, so distinct hashes
        dataset.Rows, dataset.Columns = side, side
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
        dataset.PixelData = pixels.tobytes()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(site / row[0], enforce_file_format=True)
        row[1] = str(dataset.SOPInstanceUID)  # the "one file added" step varies this UID
    with open(site / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return site


def load_once(site: str, cache: str, verify: bool) -> None:
    """One load, as a message's process would do it; prints a JSON line of its figures."""
    from fedscan.common.ingest.decode_pool import PoolSettings
    from fedscan.common.ingest.dicom import DecodeOptions
    from fedscan.common.ingest.labels import LabelSpec
    from fedscan.common.ingest.scan import IngestSettings, ingest_site

    settings = IngestSettings(SIZE, DecodeOptions(), PoolSettings(workers=2), cache, verify)
    started = time.perf_counter()
    samples, report = ingest_site(Path(site), LabelSpec(), settings)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"s": elapsed, "accepted": report.accepted, "samples": len(samples.labels)}
    print(json.dumps({**figures, **(report.cache or {}), "rss_mb": peak_mb}))


def measured(site: Path, cache: Path, *, verify: bool = False) -> dict:
    command = [sys.executable, __file__, "--load", str(site), str(cache)]
    done = subprocess.run(
        [*command, *(["--verify"] if verify else [])],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(label: str, files: int, step: str, figures: dict) -> str:
    decoded = figures["misses"]
    answered = "yes" if figures.get("packed") else "no"
    return (
        f"| {label} | {step} | {figures['s']:.2f} | {files / figures['s']:,.0f} | "
        f"{figures['hashed']:,} | {decoded:,} | {figures.get('reused', 0):,} | {answered} | "
        f"{figures['rss_mb']:,.0f} |"
    )


def _aged(path: Path) -> None:
    """Date ``path`` 10 s back: the site index trusts a stat only once a file has settled."""
    os.utime(path, ns=(time.time_ns() - 10**10, time.time_ns() - 10**10))


def _add_file(site: Path, source: Path) -> tuple[Path, list[str]]:
    """A new file: ``source``'s bytes under a new SOP Instance UID (same length), and its row."""
    with open(site / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    relative = source.relative_to(site).as_posix()
    (original,) = [r for r in rows if r[0] == relative]
    uid = original[1].encode()
    variant = uid[:-7] + b"9999999"
    added = site / "added" / "ADDED.dcm"
    added.parent.mkdir(exist_ok=True)
    added.write_bytes(source.read_bytes().replace(uid, variant))
    _aged(added)
    new_row = ["added/ADDED.dcm", variant.decode(), *original[2:]]
    with open(site / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(new_row)
    return added, rows


def steps(site: Path, cache: Path, files: int) -> list[tuple[str, int, dict]]:
    """(step, the files it should accept, its figures), each load in a fresh process."""
    time.sleep(2.5)  # let the newest files settle: an archive's files are not seconds old
    found = [("cold (hash + decode)", files, measured(site, cache))]
    found.append(("warm (index + packed store)", files, measured(site, cache)))
    found.append(("warm again", files, measured(site, cache)))
    for store in cache.glob("*/packed"):
        shutil.rmtree(store)
    found.append(("warm, no packed store (entry per image)", files, measured(site, cache)))
    changed = next(site.glob("copy/000/*.dcm"), None) or next(site.glob("*.dcm"))
    blob = bytearray(changed.read_bytes())
    blob[-1] ^= 0x01  # one pixel's lowest bit
    changed.write_bytes(bytes(blob))
    _aged(changed)
    time.sleep(2.5)
    found.append(("one file changed", files, measured(site, cache)))
    added, rows = _add_file(site, changed)
    time.sleep(2.5)
    found.append(("one file added", files + 1, measured(site, cache)))
    added.unlink()
    with open(site / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    time.sleep(2.5)
    found.append(("one file removed", files, measured(site, cache)))
    found.append(("--verify (every file hashed)", files, measured(site, cache, verify=True)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--large", type=int, default=0, help="also N files at --side² (2 048²: 8 MB each)"
    )
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_once(*args.load, args.verify)
        return
    print(f"synthetic 160×144 12-bit CR files, stored at {SIZE}², {os.cpu_count()} CPUs\n")
    print(
        "| files (bytes) | load | s | files/s | hashed | decoded | reused | packed store "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    sets = [(files, make_archive, f"{files:,}") for files in args.files]
    if args.large:
        large = lambda root, files: make_large(root, files, args.side)  # noqa: E731
        sets.append((args.large, large, f"{args.large:,} at {args.side}²"))
    for files, make, label in sets:
        with tempfile.TemporaryDirectory() as tmp:
            site = make(Path(tmp), files)
            size_gb = sum(p.stat().st_size for p in site.rglob("*.dcm")) / 1e9
            for step, accepted, figures in steps(site, Path(tmp) / "cache", files):
                assert figures["accepted"] == accepted, figures
                print(row(f"{label} ({size_gb:.2f} GB)", files, step, figures), flush=True)


if __name__ == "__main__":
    main()
