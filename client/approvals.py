"""Run approval: a site that requires it trains only on runs it approved, by configuration hash.

Invariants:
- A run is known by its id and the SHA-256 of its canonical configuration (every setting a site
  receives — model, task, classes, rounds, epochs, batch, learning rate, ε, δ, clipping,
  cross-site, the starting weights' SHA-256 — and the coordinator's fedscan version); per-request
  keys (round, threshold) are not part of it. A run from random weights hashes as it did before
  starting weights existed, so earlier approvals stand.
- The first request of an unknown run records it as pending (or approved, when the policy
  auto-approves runs within its bounds) before anything is loaded or spent; a pending run is
  refused with ``run-not-approved`` at every message until the site decides.
- A run id that comes back with another configuration is refused (``run-refused``), whatever
  was approved: the approval covers the hash, not the id.
- Decisions live in the privacy ledger's database, beside the releases; each is also an entry of
  the audit log (:mod:`fedscan.client.audit`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from fedscan.client.audit import AuditLog
from fedscan.client.ledger import LEDGER_FILE, transaction
from fedscan.common.errors import ErrorCode, FedscanError
from fedscan.common.site_settings import SiteSettings

PENDING, APPROVED, REFUSED = "pending", "approved", "refused"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS approvals (run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, "
    "state TEXT NOT NULL, settings TEXT NOT NULL, first_seen REAL NOT NULL, decided_at REAL, "
    "decided_by TEXT)"
)


class RunNotApproved(FedscanError):
    code = ErrorCode.RUN_NOT_APPROVED


class RunRefused(FedscanError):
    code = ErrorCode.RUN_REFUSED


def configuration(settings: SiteSettings, coordinator_version: str) -> dict[str, Any]:
    """The run's configuration as approved: JSON-ready, one canonical form."""
    approved = dataclasses.asdict(settings)
    if not settings.init_weights_sha256:  # random weights: the hash of earlier versions
        del approved["init_weights_sha256"]
    if not settings.secure_aggregation:  # off: the hash of earlier versions
        del approved["secure_aggregation"]
    return {"settings": approved, "fedscan": coordinator_version}


def configuration_hash(settings: SiteSettings, coordinator_version: str) -> str:
    canonical = json.dumps(
        configuration(settings, coordinator_version),
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Approvals:
    """The site's run approvals, in its ledger database."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return transaction(self.state_dir / LEDGER_FILE, (_SCHEMA,))

    def check(
        self,
        run_id: str,
        settings: SiteSettings,
        coordinator_version: str,
        *,
        sent: dict[str, Any],
        auto: bool,
    ) -> None:
        """Return if the run may proceed; record an unknown run (``sent``: the request's settings
        as they came, for ``fedscan client runs``) first; raise otherwise."""
        digest = configuration_hash(settings, coordinator_version)
        with self._db() as db:
            row = db.execute(
                "SELECT config_hash, state FROM approvals WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                state = APPROVED if auto else PENDING
                db.execute(
                    "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        digest,
                        state,
                        json.dumps(sent, sort_keys=True, default=str),
                        time.time(),
                        time.time() if auto else None,
                        "policy" if auto else None,
                    ),
                )
        if row is None:
            self._audit(run_id, digest, state, "policy" if auto else "")
        elif row[0] != digest:
            raise RunRefused(
                f"Run {run_id} came back with another configuration ({digest[:12]}, approved as "
                f"{row[0][:12]}); refused. A changed run needs a new run id."
            )
        else:
            state = row[1]
        if state == PENDING:
            raise _pending(run_id, digest, settings.init_weights_sha256)
        if state == REFUSED:
            raise RunRefused(f"Run {run_id} was refused at this site.")

    def decide(self, run_or_hash: str, state: str, *, by: str) -> dict[str, Any]:
        """Approve or refuse one run, named by its id or a prefix (≥ 8) of its hash."""
        with self._db() as db:
            rows = db.execute(
                "SELECT run_id, config_hash FROM approvals WHERE run_id = ? OR "
                "(length(?) >= 8 AND config_hash LIKE ? || '%')",
                (run_or_hash, run_or_hash, run_or_hash),
            ).fetchall()
            if len(rows) != 1:
                raise FedscanError(
                    f"{run_or_hash!r} names {len(rows)} runs; `fedscan client runs` lists them "
                    "(use the run id, or at least 8 characters of its hash)."
                )
            db.execute(
                "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ? WHERE run_id = ?",
                (state, time.time(), by, rows[0][0]),
            )
        self._audit(rows[0][0], rows[0][1], state, by)
        return next(run for run in self.runs() if run["run_id"] == rows[0][0])

    def runs(self) -> list[dict[str, Any]]:
        """Every run the site has seen, newest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT run_id, config_hash, state, settings, first_seen, decided_at, decided_by "
                "FROM approvals ORDER BY first_seen DESC"
            ).fetchall()
        names = ("run_id", "config_hash", "state", "settings", "first_seen", "decided_at", "by")
        return [
            {**dict(zip(names, row, strict=True)), "settings": json.loads(row[3])} for row in rows
        ]

    def _audit(self, run_id: str, digest: str, state: str, by: str) -> None:
        AuditLog(self.state_dir).append(
            {"event": "approval", "run": run_id, "config": digest, "decision": state, "by": by}
        )


def _pending(run_id: str, digest: str, starting_weights: str) -> RunNotApproved:
    """The refusal of a run that waits for approval (the site's log names its starting weights)."""
    weights = f", starting weights SHA-256 {starting_weights[:12]}…" if starting_weights else ""
    return RunNotApproved(
        f"Run {run_id} ({digest[:12]}{weights}) waits for approval: "
        f"`fedscan client approve {run_id}` or `fedscan client refuse {run_id}`."
    )
