"""Files → samples: a site folder of images and its labels CSV become decoded, labelled samples.

Modules:

- :mod:`~fedscan.common.ingest.scan` — :func:`ingest_site`, the whole pass over a site folder
  (:mod:`~fedscan.common.ingest.walk` — which files it reads; :mod:`~fedscan.common.ingest.samples`
  — what it returns);
- :mod:`~fedscan.common.ingest.dicom`, :mod:`~fedscan.common.ingest.dicom_header` — DICOM pixel
  semantics, and every header check made before a pixel is decoded;
- :mod:`~fedscan.common.ingest.raster` — PNG and JPEG; :mod:`~fedscan.common.ingest.decoded` — what
  both decoders return;
- :mod:`~fedscan.common.ingest.masks` — segmentation masks (PNG, .npy, DICOM SEG);
- :mod:`~fedscan.common.ingest.decode_pool`, :mod:`~fedscan.common.ingest.decode_worker` — decoding
  in worker processes with time and memory limits;
- :mod:`~fedscan.common.ingest.cache` — the decode-once cache; :mod:`~fedscan.common.ingest.index`
  — which files changed, by stat; :mod:`~fedscan.common.ingest.packed` — a site's samples as one
  memory-mapped file; :mod:`~fedscan.common.ingest.labels`
  — the labels CSV; :mod:`~fedscan.common.ingest.rejections` — the closed list of rejection codes;
  :mod:`~fedscan.common.ingest.report` — what ingestion found.

Invariants: every file ends accepted or rejected with one code; nothing here imports torch at import
time (decode workers start light, and a site whose cache answers never loads it); nothing that may
leave the site holds a path or an identifier.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedscan.common.ingest.decode_pool import PoolSettings
    from fedscan.common.ingest.dicom import DecodeOptions
    from fedscan.common.ingest.labels import LabelSpec
    from fedscan.common.ingest.rejections import Reason
    from fedscan.common.ingest.report import IngestReport
    from fedscan.common.ingest.samples import Samples
    from fedscan.common.ingest.scan import IngestSettings, ingest_site

# A lazy façade: importing one module of the package (labels, say) must not import the decoders.
_MODULES = {
    "PoolSettings": "decode_pool",
    "DecodeOptions": "dicom",
    "LabelSpec": "labels",
    "Reason": "rejections",
    "IngestReport": "report",
    "IngestSettings": "scan",
    "Samples": "samples",
    "ingest_site": "scan",
}
__all__ = [
    "DecodeOptions",
    "IngestReport",
    "IngestSettings",
    "LabelSpec",
    "PoolSettings",
    "Reason",
    "Samples",
    "ingest_site",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
