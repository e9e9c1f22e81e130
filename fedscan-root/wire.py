"""Message content packed for the wire: each array record travels as one byte array.

Flower 1.39 moves a message as a tree of objects, one per tensor (and per record), and each hop
pulls them one request at a time: SuperLink → SuperNode over gRPC, SuperNode → ClientApp over
HTTP, and back. The default CNN's 14 tensors make 31 objects per message (the U-Net's 46
tensors, 78); packed, 5. Measured on a loaded 2-core loopback deployment, a message's pull took
0.3–1.3 s per hop before packing.

Both roles use this module (it knows Flower, so it is not in ``fedscan.common``): the
coordinator's Grid packs what it sends and unpacks what comes back; the site's ClientApp
unpacks a request and packs its reply the same way it came. A message that arrives unpacked (an
in-process test federation, an older peer) is served and answered unpacked.

Invariants: unpacking gives back every array record with the same names, order, dtypes, shapes
and bytes; nothing else of the content changes; the layout is parameter names, dtypes and
shapes only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedscan.common.protocol import PACKED, PACKED_LAYOUT


def pack_arrays(named: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """Arrays by name → (one uint8 array of their bytes in order, the layout as JSON)."""
    contiguous = {name: np.asarray(a, order="C") for name, a in named.items()}  # 0-d stays 0-d
    layout = [[name, a.dtype.str, list(a.shape)] for name, a in contiguous.items()]
    buffer = np.frombuffer(b"".join(a.tobytes() for a in contiguous.values()), dtype=np.uint8)
    return buffer, json.dumps(layout)


def unpack_arrays(buffer: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack_arrays`; a layout that does not fit the buffer is a ValueError."""
    named, offset, raw = {}, 0, np.ascontiguousarray(buffer, dtype=np.uint8).tobytes()
    for name, dtype, shape in json.loads(layout):
        kind = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        named[name] = np.frombuffer(raw, dtype=kind, count=count, offset=offset).reshape(
            tuple(shape)
        )
        offset += count * kind.itemsize
    if offset != len(raw):
        raise ValueError(f"packed arrays: the layout covers {offset} of {len(raw)} bytes")
    return named


def is_packed(content: RecordDict) -> bool:
    return PACKED_LAYOUT in content.config_records


def pack(content: RecordDict) -> RecordDict:
    """``content`` with each array record packed (unchanged if it has none)."""
    if not content.array_records:
        return content
    packed, layouts = RecordDict(), dict[str, Any]()
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            buffer, layouts[name] = pack_arrays({k: a.numpy() for k, a in record.items()})
            packed[name] = ArrayRecord({PACKED: Array(buffer)})
        else:
            packed[name] = record
    packed[PACKED_LAYOUT] = ConfigRecord(layouts)
    return packed


def unpack(content: RecordDict) -> RecordDict:
    """``content`` with its packed array records restored (unchanged if none are packed)."""
    if not is_packed(content):
        return content
    layouts = content.config_records[PACKED_LAYOUT]
    unpacked = RecordDict()
    for name, record in content.items():
        if name == PACKED_LAYOUT:
            continue
        if name in layouts and isinstance(record, ArrayRecord):
            arrays = unpack_arrays(record[PACKED].numpy(), str(layouts[name]))
            record = ArrayRecord({k: Array(a) for k, a in arrays.items()})
        unpacked[name] = record
    return unpacked
