"""Where ``fedscan explain`` writes, all inside the one folder the hospital names::

    OUT/index.html                 the review page (false positives and negatives first)
    OUT/overlays/NNNNN-NAME.png    one overlay per image (NNNNN: the image's place in the data)
    OUT/dicom/NNNNN-NAME.dcm       with ``--dicom-sc``: the overlay as a DICOM Secondary Capture

Invariants: nothing is written outside OUT; each file is written whole before the next (PNG and
DICOM from the same rendered pixels); file names come from the local keys, reduced to letters,
digits and ``._-`` so that no key can climb out of OUT.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedscan.common.explain.overlay import caption, png_bytes, render
from fedscan.common.explain.records import ImageExplanation
from fedscan.common.files import atomic_write_bytes

log = logging.getLogger(__name__)
INDEX = "index.html"
OVERLAYS = "overlays"
CAPTURES = "dicom"


@dataclass(frozen=True)
class Written:
    """What one ``explain`` wrote: the page, the overlays and the Secondary Captures."""

    index: Path
    overlays: tuple[Path, ...]
    captures: tuple[Path, ...]


def file_stem(number: int, key: str) -> str:
    """A safe file name stem for the ``number``-th image, readable from its key."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("#", "-f"))[-60:].strip("._") or "image"
    return f"{number:05d}-{tail}"


def write_explanations(
    records: Sequence[ImageExplanation],
    out: Path,
    *,
    title: str,
    summary: str,
    site_dir: Path | None = None,
    dicom_sc: bool = False,
) -> Written:
    """Write the overlays, the index page and (``dicom_sc``) one capture per image into ``out``;
    ``site_dir``: where the keys' source files are (their headers file the captures)."""
    from fedscan.common.explain.index_page import index_html

    (out / OVERLAYS).mkdir(parents=True, exist_ok=True)
    series_uid = _new_uid() if dicom_sc else ""
    overlays, pages, captures = {}, [], []
    for number, record in enumerate(records):
        stem = file_stem(number, record.key)
        pixels = render(record)
        atomic_write_bytes(out / OVERLAYS / f"{stem}.png", png_bytes(pixels), durable=False)
        overlays[record.key] = f"{OVERLAYS}/{stem}.png"
        pages.append(out / OVERLAYS / f"{stem}.png")
        if dicom_sc:
            captures.append(out / CAPTURES / f"{stem}.dcm")
            _write_capture(captures[-1], pixels, record, site_dir, series_uid, number)
    page = index_html(records, overlays, title=title, summary=summary)
    atomic_write_bytes(out / INDEX, page.encode("utf-8"))
    log.info("explain: wrote %s overlays and %s captures into %s", len(pages), len(captures), out)
    return Written(out / INDEX, tuple(pages), tuple(captures))


def _write_capture(
    path: Path,
    pixels: np.ndarray,
    record: ImageExplanation,
    site_dir: Path | None,
    series_uid: str,
    number: int,
) -> None:
    from fedscan.common.explain.secondary_capture import (
        secondary_capture,
        source_header,
        write_capture,
    )

    source = source_header(site_dir / record.key.split("#")[0]) if site_dir else None
    scores = ", ".join(
        f"{name} {score:.3f}" for name, score in zip(record.classes, record.scores, strict=True)
    )
    description = f"fedscan explain: {scores}; {caption(record).splitlines()[-1]}"
    dataset = secondary_capture(
        pixels,
        source,
        series_uid=series_uid,
        number=number + 1,
        description=description,
    )
    write_capture(path, dataset)


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())
