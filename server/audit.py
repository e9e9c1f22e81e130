"""The coordinator's record of a run: every message it sent and every reply it received, in the
sites' audit-log form (:mod:`fedscan.common.audit_chain`), so that both sides can be compared.

``run_dir/audit.jsonl``, hash-chained, fsynced per line; its head in ``run_dir/audit-head.json``
(replaced atomically after each line), so a truncated record is detected. An entry holds what the
site's own log holds for the same exchange: run, round, action, the SHA-256 of the settings sent
(the site hashes what it received the same way), array names, shapes and L2 norms, metric keys,
ε, and a refusal's public code — never a value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

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
from fedscan.server.polling_grid import DelegatingGrid
from fedscan.server.triage import reported_site_name

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit-head.json"


class RunAudit:
    """The record in ``folder`` (a run directory)."""

    def __init__(self, folder: Path) -> None:
        self.path, self.head_path = Path(folder) / AUDIT_FILE, Path(folder) / HEAD_FILE

    def _head(self) -> tuple[int, str]:
        try:
            head = json.loads(self.head_path.read_text())
            return int(head["seq"]), str(head["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, GENESIS

    def append(self, entry: Entry) -> Entry:
        written = append_entry(self.path, entry, next_link(self.path, self._head()))
        temporary = self.head_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"seq": written["seq"], "hash": written["hash"]}))
        os.replace(temporary, self.head_path)
        return written

    def entries(self) -> list[Entry]:
        return read_entries(self.path)

    def verify(self) -> Verdict:
        return verify_chain(self.path, self._head(), "run directory")


class AuditedGrid(DelegatingGrid):
    """``inner``, with every exchange written to the run's record before and after."""

    def __init__(self, inner: Grid, audit: RunAudit) -> None:
        super().__init__(inner)
        self.audit = audit

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        sent = {message.metadata.dst_node_id: message for message in messages}
        for message in messages:
            self.audit.append({"event": "sent", **_exchange(message), **_content(message)})
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            asked = sent.get(reply.metadata.src_node_id)
            entry = {"event": "received", **(_exchange(asked) if asked else {})}
            entry["site"] = reported_site_name(reply) or f"node-{reply.metadata.src_node_id}"
            if reply.has_error():
                entry["decision"], entry["code"] = "refused", reply.error.code
            else:
                entry["decision"] = "answered"
                entry.update(_content(reply))
            self.audit.append(entry)
        return replies


def _exchange(message: Message) -> dict[str, Any]:
    config = dict(message.content.config_records.get(protocol.CONFIG) or {})
    return {
        "node": message.metadata.dst_node_id,
        "run": str(config.get(protocol.RUN_ID, "")),
        "round": config.get(protocol.SERVER_ROUND, 0),
        "action": message.metadata.message_type,
        "config": config_hash(config),
    }


def _content(message: Message) -> dict[str, Any]:
    return released(message.content.array_records, message.content.metric_records)
