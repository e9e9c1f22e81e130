"""The site's audit log: one hash-chained JSON line per request received and per reply sent.

``state-dir/audit.jsonl`` lets a hospital prove afterwards what it was asked and what left.

Invariants:
- Append-only and chained: each entry holds ``prev``, the hash of the entry before it, and
  ``hash`` = SHA-256 of ``prev`` and the entry's canonical JSON (sorted keys, no ``hash``). Every
  append is fsynced, and the chain head (sequence number, hash) is committed to the privacy
  ledger's database in the same transaction that serialises appends across processes: an edited
  byte breaks a hash, a deleted line breaks ``prev``, a truncated file falls short of the head.
- An append interrupted between the file's fsync and the head's commit leaves the file one entry
  ahead of the head; the next append (and ``verify``) accepts that entry only if it chains on.
- It records no pixel, path or identifier: run id, round, action, a hash of the request's
  settings, the decision (with its public code), and what left — array names, shapes and L2
  norms, metric keys, ε before and after.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Message

from fedscan.client.ledger import LEDGER_FILE, transaction
from fedscan.common import protocol
from fedscan.common.errors import REPLY_CODES

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64  # ``prev`` of the first entry
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_epsilon (run_id TEXT PRIMARY KEY, epsilon REAL NOT NULL)",
)
Entry = dict[str, Any]


def entry_hash(prev: str, entry: Entry) -> str:
    body = {key: value for key, value in entry.items() if key != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256((prev + canonical).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: the entries that chain, and the first problem (None: all good)."""

    entries: int
    problem: str | None = None
    line: int | None = None  # 1-based line of the first entry that does not verify

    @property
    def ok(self) -> bool:
        return self.problem is None


class AuditLog:
    """The audit log in ``state_dir`` (created on first use, mode 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / AUDIT_FILE

    def _head(self) -> AbstractContextManager[sqlite3.Connection]:
        """The ledger database inside one write transaction: appends are serialised on it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return transaction(self.state_dir / LEDGER_FILE, _SCHEMA)

    def append(self, entry: Entry) -> Entry:
        """Chain ``entry`` on, write and fsync it, commit the new head; the entry as written."""
        with self._head() as db:
            seq, prev = _stored_head(db)
            last = _last_entry(self.path)
            if last is not None and last.get("seq") == seq + 1 and last.get("prev") == prev:
                if entry_hash(prev, last) == last.get("hash"):  # an append cut short: adopt it
                    seq, prev = seq + 1, last["hash"]
            if isinstance(entry.get("epsilon"), float) and entry.get("run"):  # finite: DP
                entry["epsilon_before"] = _epsilon_before(db, entry["run"])
                db.execute(
                    "INSERT OR REPLACE INTO audit_epsilon VALUES (?, ?)",
                    (entry["run"], entry["epsilon"]),
                )
            written = {
                **entry,
                "seq": seq + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "prev": prev,
            }
            written["hash"] = entry_hash(prev, written)
            _write_line(self.path, json.dumps(written, sort_keys=True, allow_nan=False))
            db.execute(
                "INSERT OR REPLACE INTO audit_head VALUES (0, ?, ?)", (seq + 1, written["hash"])
            )
        return written

    def entries(self) -> list[Entry]:
        """Every entry that parses, in order (``verify`` says whether they can be trusted)."""
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def verify(self) -> Verdict:
        """Walk the chain from the first line and compare its end with the ledger's head."""
        with self._head() as db:
            seq, head = _stored_head(db)
        lines = self.path.read_bytes().splitlines() if self.path.is_file() else []
        prev, count = GENESIS, 0
        for number, raw in enumerate(lines, start=1):
            problem = _check_line(raw, prev, count + 1)
            if problem is not None:
                return Verdict(count, problem, number)
            prev, count = json.loads(raw)["hash"], count + 1
        if count < seq:
            return Verdict(count, f"the file ends at entry {count}; the ledger's head is {seq}")
        if count == seq and prev != head or count > seq + 1:
            return Verdict(count, "the file's last entries do not match the ledger's head")
        return Verdict(count)


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


def _stored_head(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit_head WHERE id = 0").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def _epsilon_before(db: sqlite3.Connection, run_id: str) -> float:
    row = db.execute("SELECT epsilon FROM audit_epsilon WHERE run_id = ?", (run_id,)).fetchone()
    return float(row[0]) if row else 0.0


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


def _write_line(path: Path, line: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (line + "\n").encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def released_arrays(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Array record → name → shape and L2 norm (NaN/inf as strings: the log is strict JSON)."""
    import numpy as np

    summary: dict[str, dict[str, Any]] = {}
    for record, arrays in records.items():
        summary[record] = {}
        for name, array in arrays.items():
            values = np.asarray(array, dtype=np.float64)
            norm = float(np.linalg.norm(values.ravel())) if values.size else 0.0
            summary[record][name] = {
                "shape": list(values.shape),
                "norm": norm if math.isfinite(norm) else str(norm),
            }
    return summary


def record_request(state_dir: Path, msg: Message) -> bool:
    """Audit a request as it arrives; whether it asks for a round the ledger already released (it
    will be answered from the stored release)."""
    from fedscan.client.ledger import PrivacyLedger

    run, server_round = _run_and_round(msg)
    replay = bool(run) and PrivacyLedger(state_dir).has_release(run, server_round)
    AuditLog(state_dir).append(
        {
            "event": "request",
            "run": run,
            "round": server_round,
            "action": msg.metadata.message_type,
            "config": _config_hash(msg),
        }
    )
    return replay


def record_reply(state_dir: Path, msg: Message, reply: Message, *, replay: bool) -> None:
    """Audit a reply before it is sent: the decision and everything that leaves."""
    run, server_round = _run_and_round(msg)
    entry: Entry = {"event": "reply", "run": run, "round": server_round}
    entry["action"] = msg.metadata.message_type
    if reply.has_error():
        entry["decision"], entry["code"] = "refused", _PUBLIC_CODES.get(reply.error.code, "?")
        AuditLog(state_dir).append(entry)
        return
    content = reply.content
    entry["decision"] = "replayed" if replay else "answered"
    entry["arrays"] = released_arrays(
        {
            name: {k: a.numpy() for k, a in record.items()}
            for name, record in content.array_records.items()
        }
    )
    entry["metrics"] = {name: sorted(record) for name, record in content.metric_records.items()}
    metrics: dict[str, Any] = dict(content.metric_records.get(protocol.METRICS) or {})
    epsilon = metrics.get(protocol.EPSILON)
    if isinstance(epsilon, (int, float)):
        entry["epsilon"] = float(epsilon) if math.isfinite(epsilon) else str(epsilon)
    AuditLog(state_dir).append(entry)


_PUBLIC_CODES = {number: str(code) for code, (number, _) in REPLY_CODES.items()}


def _config(msg: Message) -> dict[str, Any]:
    found = msg.content.config_records.get(protocol.CONFIG) if msg.has_content() else None
    return dict(found or {})


def _run_and_round(msg: Message) -> tuple[str, int]:
    config = _config(msg)
    run, server_round = config.get(protocol.RUN_ID, ""), config.get(protocol.SERVER_ROUND, 0)
    return (
        run if isinstance(run, str) else "",
        server_round if isinstance(server_round, int) else 0,
    )


def _config_hash(msg: Message) -> str:
    canonical = json.dumps(_config(msg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
