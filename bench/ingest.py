"""Ingestion speed: files/s decoding cold versus reading the decode-once cache warm.

    python bench/ingest.py [--files 1000] [--syntaxes explicit rle jpeg2000]

Each row ingests the same synthetic site (one scanner profile, stored in the given
transfer syntax) twice with a fresh cache: cold (every file decoded in worker
processes and written to the cache), then warm (every file a cache hit).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from fedscan.common.data.synth import SynthConfig, generate_site
from fedscan.common.ingest.decode_pool import PoolSettings
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.scan import IngestSettings, ingest_site

SYNTAXES = {
    "explicit": None,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}


def make_site(root: Path, files: int, syntax: str) -> Path:
    site = root / f"site-{syntax}"
    generate_site(site, 1, SynthConfig(sites=3, images_per_site=files, seed=0))
    if SYNTAXES[syntax] is not None:
        for path in site.glob("*.dcm"):
            ds = pydicom.dcmread(path)
            ds.compress(SYNTAXES[syntax])
            ds.save_as(path)
    return site


def time_ingest(site: Path, cache: Path, workers: int) -> tuple[float, int, dict]:
    settings = IngestSettings(28, DecodeOptions(), PoolSettings(workers=workers), str(cache))
    started = time.perf_counter()
    _, report = ingest_site(site, LabelSpec(), settings)
    return time.perf_counter() - started, report.accepted, report.cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument(
        "--syntaxes", nargs="+", default=["explicit", "rle", "jpeg2000"], choices=list(SYNTAXES)
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.files} synthetic 160×144 12-bit CR files, {args.workers} decode workers, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| transfer syntax | cold (decode) files/s | warm (cache) files/s | warm ÷ cold | cache "
        "hits |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in args.syntaxes:
            site = make_site(Path(tmp), args.files, syntax)
            cache = Path(tmp) / f"cache-{syntax}"
            cold_s, cold_n, _ = time_ingest(site, cache, args.workers)
            warm_s, warm_n, stats = time_ingest(site, cache, args.workers)
            assert cold_n == warm_n == args.files, (cold_n, warm_n)
            print(
                f"| {pydicom.dcmread(next(site.glob('*.dcm'))).file_meta.TransferSyntaxUID.name} "
                f"| {args.files / cold_s:,.0f} | {args.files / warm_s:,.0f} | "
                f"{cold_s / warm_s:.1f}× "
                f"| {stats['hits']}/{args.files} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
