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
  norms, metric keys, ε before and after; under secure aggregation, ``release`` says that the
  update left masked (``masked``) or that a reply held only protocol messages.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from flwr.app import Message

from fedscan.client.ledger import LEDGER_FILE, transaction
from fedscan.common import protocol
from fedscan.common.audit_chain import (
    GENESIS,
    Entry,
    Verdict,
    append_entry,
    config_hash,
    next_link,
    read_entries,
    released,
    verify_chain,
)
from fedscan.common.errors import REPLY_CODES

__all__ = ["AUDIT_FILE", "AuditLog", "Verdict", "record_reply", "record_request"]

AUDIT_FILE = "audit.jsonl"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_epsilon (run_id TEXT PRIMARY KEY, epsilon REAL NOT NULL)",
)


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
            link = next_link(self.path, _stored_head(db))
            if isinstance(entry.get("epsilon"), float) and entry.get("run"):  # finite: DP
                entry["epsilon_before"] = _epsilon_before(db, entry["run"])
                db.execute(
                    "INSERT OR REPLACE INTO audit_epsilon VALUES (?, ?)",
                    (entry["run"], entry["epsilon"]),
                )
            written = append_entry(self.path, entry, link)
            db.execute(
                "INSERT OR REPLACE INTO audit_head VALUES (0, ?, ?)",
                (written["seq"], written["hash"]),
            )
        return written

    def entries(self) -> list[Entry]:
        return read_entries(self.path)

    def verify(self) -> Verdict:
        """Walk the chain from the first line and compare its end with the ledger's head."""
        with self._head() as db:
            head = _stored_head(db)
        return verify_chain(self.path, head, "ledger")


def _stored_head(db: sqlite3.Connection) -> tuple[int, str]:
    row = db.execute("SELECT seq, hash FROM audit_head WHERE id = 0").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def _epsilon_before(db: sqlite3.Connection, run_id: str) -> float:
    row = db.execute("SELECT epsilon FROM audit_epsilon WHERE run_id = ?", (run_id,)).fetchone()
    return float(row[0]) if row else 0.0


def record_request(state_dir: Path, msg: Message) -> bool:
    """Audit a request as it arrives; whether it asks for a round the ledger already released (it
    will be answered from the stored release)."""
    from fedscan.client.ledger import PrivacyLedger

    run, server_round = _run_and_round(msg)
    # A secure-aggregation step follows its round's release; it is not that release asked again.
    step = msg.metadata.message_type.partition(".")[2] in _SECURE_STEPS
    replay = bool(run) and not step and PrivacyLedger(state_dir).has_release(run, server_round)
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
    entry["decision"] = "replayed" if replay else "answered"
    entry.update(released(reply.content.array_records, reply.content.metric_records))
    if protocol.SECAGG_MASKED in reply.content.array_records:
        entry["release"] = "masked"  # the update, quantised and masked: only the sum is readable
    elif protocol.SECAGG in reply.content.config_records and not reply.content.array_records:
        entry["release"] = "secure-aggregation"  # keys, sealed shares or shares: no update
    AuditLog(state_dir).append(entry)


_PUBLIC_CODES = {number: str(code) for code, (number, _) in REPLY_CODES.items()}
_SECURE_STEPS = (
    protocol.SECAGG_SHARE_ACTION,
    protocol.SECAGG_MASK_ACTION,
    protocol.SECAGG_UNMASK_ACTION,
)


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
    return config_hash(_config(msg))
