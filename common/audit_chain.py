"""A hash-chained, append-only JSON-lines log: the form of the site's audit log and of the
coordinator's record of a run, so that the two can be compared line by line.

Invariants:
- Each entry holds ``seq`` (1, 2, …), ``prev`` (the previous entry's hash; :data:`GENESIS` for the
  first) and ``hash`` = SHA-256 of ``prev`` and the entry's canonical JSON without ``hash``.
- Lines are appended with O_APPEND and fsynced one by one; the file is created 0600.
- The chain's head (seq, hash) is kept apart from the file by its owner (the site: its ledger
  database; the coordinator: a head file), so a truncated file is detected too.
- Entries hold shapes, norms, keys and hashes only: :func:`array_summary` never copies a value.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedscan.common import protocol

GENESIS = "0" * 64  # ``prev`` of the first entry
Entry = dict[str, Any]


def entry_hash(prev: str, entry: Entry) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256((prev + canonical).encode()).hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of a request's settings record, the same on both sides of the wire."""
    canonical = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """What a verification found: the entries that chain, and the first problem (None: good)."""

    entries: int
    problem: str | None = None
    line: int | None = None  # 1-based line of the first entry that does not verify

    @property
    def ok(self) -> bool:
        return self.problem is None


def next_link(path: Path, head: tuple[int, str]) -> tuple[int, str]:
    """The (seq, hash) to chain the next entry on: the stored head, or the file's last entry when
    an append was cut short after its line was written but before its head was stored."""
    seq, prev = head
    last = _last_entry(path)
    if last is not None and last.get("seq") == seq + 1 and last.get("prev") == prev:
        if entry_hash(prev, last) == last.get("hash"):
            return seq + 1, str(last["hash"])
    return seq, prev


def append_entry(path: Path, entry: Entry, link: tuple[int, str]) -> Entry:
    """Write ``entry`` chained on ``link`` (fsynced); the entry as written (its hash is the new
    head, which the caller stores)."""
    seq, prev = link
    written = {
        **entry,
        "seq": seq + 1,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prev": prev,
    }
    written["hash"] = entry_hash(prev, written)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (json.dumps(written, sort_keys=True, allow_nan=False) + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return written


def read_entries(path: Path) -> list[Entry]:
    """Every entry that parses, in order (:func:`verify_chain` says whether to trust them)."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def verify_chain(path: Path, head: tuple[int, str], holder: str) -> Verdict:
    """Walk the chain from the first line; compare its end with ``head`` (kept by ``holder``)."""
    seq, top = head
    lines = path.read_bytes().splitlines() if path.is_file() else []
    prev, count = GENESIS, 0
    for number, raw in enumerate(lines, start=1):
        problem = _check_line(raw, prev, count + 1)
        if problem is not None:
            return Verdict(count, problem, number)
        prev, count = json.loads(raw)["hash"], count + 1
    if count < seq:
        return Verdict(count, f"the file ends at entry {count}; the {holder}'s head is {seq}")
    if count == seq and prev != top or count > seq + 1:
        return Verdict(count, f"the file's last entries do not match the {holder}'s head")
    return Verdict(count)


def released(
    arrays: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Mapping[str, Any]]
) -> Entry:
    """What a message carried, as either side's log records it: each array's shape and L2 norm,
    the metric keys, and ε (a number when finite, "inf" without DP)."""
    found: Entry = {"arrays": array_summary(arrays)}
    if metrics:
        found["metrics"] = {name: sorted(record) for name, record in metrics.items()}
        epsilon = dict(metrics.get(protocol.METRICS) or {}).get(protocol.EPSILON)
        if isinstance(epsilon, (int, float)):
            found["epsilon"] = float(epsilon) if math.isfinite(epsilon) else str(epsilon)
    return found


def array_summary(records: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Array record → name → shape and L2 norm (NaN/inf as strings: the log is strict JSON). An
    array is anything NumPy reads, or has a ``numpy()`` method (a record's arrays as they are)."""
    summary: dict[str, dict[str, Any]] = {}
    for record, arrays in records.items():
        summary[record] = {}
        for name, array in arrays.items():
            plain = array.numpy() if hasattr(array, "numpy") else array
            values = np.asarray(plain, dtype=np.float64)
            norm = float(np.linalg.norm(values.ravel())) if values.size else 0.0
            summary[record][name] = {
                "shape": list(values.shape),
                "norm": norm if math.isfinite(norm) else str(norm),
            }
    return summary


def _check_line(raw: bytes, prev: str, seq: int) -> str | None:
    try:
        entry = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "not a JSON entry"
    if not isinstance(entry, dict) or entry.get("seq") != seq:
        return f"expected entry {seq} here (a line was removed, added or moved)"
    if entry.get("prev") != prev:
        return "does not chain on the entry before it (a line was removed or changed)"
    if entry_hash(prev, entry) != entry.get("hash"):
        return "its content does not match its hash (the entry was edited)"
    return None


def _last_entry(path: Path) -> Entry | None:
    """The file's last line, read from its end (the log only grows)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        tail = handle.read().splitlines()
    try:
        found = json.loads(tail[-1]) if tail else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None
