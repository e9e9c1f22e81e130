"""The site's privacy ledger: every DP release it ever made, on its own disk.

A SQLite file with ``synchronous=FULL``: a committed release survives a crash
or power loss. The site commits a release *before* the update leaves, so a
crash can over-count a spend (an update that never left) but never lose one.
One row per (run, round): a round asked for again is answered from the
stored release, not trained again, so it is never counted twice.

ε per run and over the site's lifetime is recomputed from the rows (PRV
accountant, RDP beside it as a cross-check); nothing cached can drift.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedscan.common.errors import ErrorCode, PrivacyError
from fedscan.common.privacy import HistoryEntry, epsilon_spent

LEDGER_FILE = "privacy-ledger.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, noise_multiplier REAL NOT NULL, target_epsilon REAL NOT NULL,
    delta REAL NOT NULL, clip_norm REAL NOT NULL, planned_rounds INTEGER NOT NULL, started_at REAL
    NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    run_id TEXT NOT NULL REFERENCES runs(run_id), round INTEGER NOT NULL,
    noise_multiplier REAL NOT NULL, sample_rate REAL NOT NULL, steps INTEGER NOT NULL,
    clip_norm REAL NOT NULL, delta REAL NOT NULL, accountant TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (run_id, round));
"""

_COUNTS = (
    "CREATE TABLE IF NOT EXISTS count_releases (run_id TEXT PRIMARY KEY, released INTEGER NOT "
    "NULL, recorded_at REAL NOT NULL)"
)

# Secure aggregation: the rounds whose update left masked, and the L2 bound it was clipped to.
_MASKED = (
    "CREATE TABLE IF NOT EXISTS masked_releases (run_id TEXT NOT NULL, round INTEGER NOT NULL, "
    "clip_bound REAL NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (run_id, round))"
)

_SELECT_RUNS = (
    "SELECT run_id, noise_multiplier, target_epsilon, delta, clip_norm, planned_rounds FROM runs"
)


@contextmanager
def transaction(path: Path, schema: tuple[str, ...] = ()) -> Iterator[sqlite3.Connection]:
    """One write transaction on the ledger database at ``path`` (``schema`` created first):
    durable (synchronous=FULL) and serialised across processes (BEGIN IMMEDIATE). The site's
    audit-log head and run approvals live in the same file, written the same way."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            db.execute(statement)
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    noise_multiplier: float
    target_epsilon: float
    delta: float
    clip_norm: float
    planned_rounds: int


@dataclass(frozen=True)
class Release:
    """One DP training release: what the accountant needs, and what the officer audits."""

    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    clip_norm: float
    delta: float
    accountant: str
    dataset_fingerprint: str

    @property
    def history(self) -> HistoryEntry:
        return (self.noise_multiplier, self.sample_rate, self.steps)


class PrivacyLedger:
    """Open (or create) the ledger in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LEDGER_FILE
        try:
            with self._connect() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise PrivacyError(
                "The site's privacy ledger is unreadable; restore it from backup before "
                "training (never delete it: that would reset the budget).",
                code=ErrorCode.LEDGER_CORRUPT,
            ) from exc

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    def start_run(self, run: RunRecord) -> RunRecord:
        """Record the run's calibrated noise once; return the stored run (the first one wins)."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.noise_multiplier,
                    run.target_epsilon,
                    run.delta,
                    run.clip_norm,
                    run.planned_rounds,
                    time.time(),
                ),
            )
            row = db.execute(_SELECT_RUNS + " WHERE run_id = ?", (run.run_id,)).fetchone()
        return RunRecord(*row)

    def run(self, run_id: str) -> RunRecord | None:
        with self._connect() as db:
            row = db.execute(_SELECT_RUNS + " WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord(*row) if row else None

    def record(self, release: Release) -> bool:
        """Commit ``release`` durably; False if that (run, round) was already recorded."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_release_values(release), time.time()),
            )
            return cursor.rowcount == 1

    def has_release(self, run_id: str, server_round: int) -> bool:
        with self._connect() as db:
            return (
                db.execute(
                    "SELECT 1 FROM releases WHERE run_id = ? AND round = ?", (run_id, server_round)
                ).fetchone()
                is not None
            )

    def releases(self, run_id: str | None = None) -> list[Release]:
        query = (
            "SELECT run_id, round, noise_multiplier, sample_rate, steps, clip_norm, delta, "
            "accountant, "
            "dataset_fingerprint FROM releases"
        )
        with self._connect() as db:
            rows = db.execute(
                query + (" WHERE run_id = ?" if run_id else "") + " ORDER BY recorded_at, round",
                (run_id,) if run_id else (),
            ).fetchall()
        return [Release(*row) for row in rows]

    def count_release(self, run_id: str) -> int | None:
        """The run's released training-image count (noised, see :mod:`fedscan.client.counts`)."""
        with transaction(self.path, (_COUNTS,)) as db:
            row = db.execute(
                "SELECT released FROM count_releases WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(row[0]) if row else None

    def record_count(self, release: Release, released: int) -> int:
        """Commit the count release and its ledger row in one transaction; the count stored (the
        first one wins: a count is released once per run)."""
        with transaction(self.path, (_COUNTS,)) as db:
            db.execute(
                "INSERT OR IGNORE INTO count_releases VALUES (?, ?, ?)",
                (release.run_id, released, time.time()),
            )
            db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_release_values(release), time.time()),
            )
            row = db.execute(
                "SELECT released FROM count_releases WHERE run_id = ?", (release.run_id,)
            ).fetchone()
        return int(row[0])

    def record_masked(self, run_id: str, server_round: int, clip_bound: float) -> None:
        """Record that the round's update leaves masked (secure aggregation), before it does;
        the DP release itself was recorded when the round trained."""
        with transaction(self.path, (_MASKED,)) as db:
            db.execute(
                "INSERT OR IGNORE INTO masked_releases VALUES (?, ?, ?, ?)",
                (run_id, server_round, clip_bound, time.time()),
            )

    def masked_rounds(self, run_id: str) -> dict[int, float]:
        """The run's rounds whose update left masked: round -> the bound it was clipped to."""
        with transaction(self.path, (_MASKED,)) as db:
            rows = db.execute(
                "SELECT round, clip_bound FROM masked_releases WHERE run_id = ? ORDER BY round",
                (run_id,),
            ).fetchall()
        return {int(r): float(bound) for r, bound in rows}

    def runs(self) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute(_SELECT_RUNS + " ORDER BY started_at").fetchall()
        return [RunRecord(*row) for row in rows]

    def epsilon(
        self,
        delta: float,
        *,
        run_id: str | None = None,
        accountant: str = "prv",
        extra: list[HistoryEntry] | None = None,
    ) -> float:
        """ε of the run's releases (or all of them), plus ``extra`` planned steps, at ``delta``."""
        history = [release.history for release in self.releases(run_id)] + list(extra or [])
        return epsilon_spent(history, delta, accountant=accountant)


def _release_values(release: Release) -> tuple:
    return (
        release.run_id,
        release.round,
        release.noise_multiplier,
        release.sample_rate,
        release.steps,
        release.clip_norm,
        release.delta,
        release.accountant,
        release.dataset_fingerprint,
    )
