"""The metric rows of the site's privacy ledger: every DP metric release, under its own budget.

Validation images and training images are different people, so a run's metric releases compose
among themselves (a budget of their own, ``[privacy] max-epsilon-metrics-per-run``), never with the
training rounds. They live in the same SQLite file as the training rows, written the same way
(:func:`fedscan.client.ledger.transaction`: durable, serialised across processes).

Invariants:
- A run's metric noise is calibrated once, at its first metric release, and stored; a restarted
  site keeps it.
- A release is committed, with the exact values released, *before* it is sent. A release asked for
  again (same run, same key: the same model at the same step) is answered with the stored values:
  re-sending costs no privacy, drawing fresh noise would.
- ε per run is recomputed from the rows, exactly: the releases are Gaussian mechanisms without
  subsampling, whose composition is μ-Gaussian DP (``common/privacy.gaussian_epsilon``); the
  tests recompute it independently with Opacus' PRV accountant.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.client.ledger import LEDGER_FILE, transaction
from fedscan.common.privacy import HistoryEntry, gaussian_epsilon

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS metric_runs (run_id TEXT PRIMARY KEY, policy TEXT NOT NULL, "
    "round_noise REAL NOT NULL, final_noise REAL NOT NULL, cross_site_noise REAL NOT NULL, "
    "target_epsilon REAL NOT NULL, delta REAL NOT NULL, degraded INTEGER NOT NULL DEFAULT 0, "
    "started_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS metric_releases (run_id TEXT NOT NULL, release_key TEXT NOT NULL, "
    "kind TEXT NOT NULL, noise_multiplier REAL NOT NULL, delta REAL NOT NULL, released TEXT NOT "
    "NULL, recorded_at REAL NOT NULL, PRIMARY KEY (run_id, release_key))",
)
_RUN_COLUMNS = "run_id, policy, round_noise, final_noise, cross_site_noise, target_epsilon, delta"


@dataclass(frozen=True)
class MetricRun:
    """A run's metric noise multipliers (per kind of release; 0: none planned) and budget."""

    run_id: str
    policy: str
    round_noise: float
    final_noise: float
    cross_site_noise: float
    target_epsilon: float
    delta: float

    def noise(self, kind: str) -> float:
        return {"round": self.round_noise, "final": self.final_noise}.get(
            kind, self.cross_site_noise
        )


@dataclass(frozen=True)
class MetricRelease:
    run_id: str
    key: str
    kind: str
    noise_multiplier: float
    delta: float

    @property
    def history(self) -> HistoryEntry:
        return (self.noise_multiplier, 1.0, 1)


class MetricLedger:
    """The metric rows of the ledger in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(state_dir) / LEDGER_FILE

    def _connect(self) -> Any:
        return transaction(self.path, _SCHEMA)

    def start_run(self, run: MetricRun) -> MetricRun:
        """Store the run's calibrated noise once; the stored run (the first one wins)."""
        with self._connect() as db:
            db.execute(
                f"INSERT OR IGNORE INTO metric_runs ({_RUN_COLUMNS}, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*_run_values(run), time.time()),
            )
            row = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM metric_runs WHERE run_id = ?", (run.run_id,)
            ).fetchone()
        return MetricRun(*row)

    def run(self, run_id: str) -> MetricRun | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_RUN_COLUMNS} FROM metric_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return MetricRun(*row) if row else None

    def degrade(self, run_id: str) -> bool:
        """Mark the run as releasing its final evaluation only; True the first time."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE metric_runs SET degraded = 1 WHERE run_id = ? AND degraded = 0", (run_id,)
            )
            return cursor.rowcount == 1

    def degraded(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute(
                "SELECT degraded FROM metric_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return bool(row and row[0])

    def record(self, release: MetricRelease, released: dict[str, Any]) -> bool:
        """Commit ``release`` with the values it released; False if its key was already there."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO metric_releases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    release.run_id,
                    release.key,
                    release.kind,
                    release.noise_multiplier,
                    release.delta,
                    json.dumps(released),
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

    def stored(self, run_id: str, key: str) -> dict[str, Any] | None:
        """The values released under ``key`` in ``run_id``, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT released FROM metric_releases WHERE run_id = ? AND release_key = ?",
                (run_id, key),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def releases(self, run_id: str | None = None) -> list[MetricRelease]:
        query = "SELECT run_id, release_key, kind, noise_multiplier, delta FROM metric_releases"
        with self._connect() as db:
            rows = db.execute(
                query + (" WHERE run_id = ?" if run_id else "") + " ORDER BY recorded_at",
                (run_id,) if run_id else (),
            ).fetchall()
        return [MetricRelease(*row) for row in rows]

    def runs(self) -> list[MetricRun]:
        try:
            with self._connect() as db:
                rows = db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM metric_runs ORDER BY started_at"
                ).fetchall()
        except sqlite3.DatabaseError:
            return []
        return [MetricRun(*row) for row in rows]

    def epsilon(
        self, delta: float, *, run_id: str | None = None, extra: list[HistoryEntry] | None = None
    ) -> float:
        """ε of the run's metric releases (or all of them), plus ``extra`` planned ones."""
        history = [release.history for release in self.releases(run_id)] + list(extra or [])
        return gaussian_epsilon(history, delta)


def _run_values(run: MetricRun) -> tuple:
    return (
        run.run_id,
        run.policy,
        run.round_noise,
        run.final_noise,
        run.cross_site_noise,
        run.target_epsilon,
        run.delta,
    )
