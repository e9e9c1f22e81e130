"""A site's DP releases: replayed when asked for twice, otherwise planned, made, stored and
committed, then sent.

The one sequence every DP release takes (:func:`release_once`: a training round, the cross-site
fine-tune, the classical models' feature statistics):

1. a stored release for this (run, round) whose spend the ledger holds is re-sent as it is —
   training again would be a second release of the same data under fresh noise, while re-sending
   costs no privacy;
2. otherwise the release is planned against the ledger and the site's policy (refused when it would
   overspend), made, stored (atomically), committed to the ledger, and only then returned to be
   sent.

A stored release the ledger lacks was never sent (the ledger commits before anything leaves), so it
is made afresh. A crash between the commit and the send over-counts a spend; it never loses one.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedscan.client import budget
from fedscan.client.ledger import PrivacyLedger
from fedscan.common.files import atomic_write_bytes
from fedscan.common.privacy import HistoryEntry
from fedscan.common.protocol import ARRAYS, METRICS, RUN_ID

log = logging.getLogger(__name__)

RELEASES_DIR = "releases"
Arrays = dict[str, torch.Tensor]


def _path(state_dir: Path, run_id: str) -> Path:
    name = hashlib.blake2b(run_id.encode(), digest_size=12).hexdigest()
    return Path(state_dir) / RELEASES_DIR / f"{name}.pt"


def save_release(
    state_dir: Path, run_id: str, server_round: int, arrays: Arrays, metrics: dict[str, Any]
) -> None:
    """Keep ``server_round``'s release of ``run_id`` (replacing the run's previous one), durably."""
    path = _path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = io.BytesIO()
    # The fields keep fedscan 0.1's names (the protocol's run-id, arrays and metrics): old files
    # still load.
    torch.save({RUN_ID: run_id, "round": server_round, ARRAYS: arrays, METRICS: metrics}, payload)
    atomic_write_bytes(path, payload.getvalue(), private=True)


def load_release(
    state_dir: Path, run_id: str, server_round: int
) -> tuple[Arrays, dict[str, Any]] | None:
    """The stored release of ``server_round``, or None if the last one stored is another round."""
    path = _path(state_dir, run_id)
    if not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored.get(RUN_ID) != run_id or stored.get("round") != server_round:
        return None
    return stored[ARRAYS], stored[METRICS]


@dataclass(frozen=True)
class Made:
    """What a release produced: what leaves, what the accountant counts, and what was used (the
    site's fingerprint of its data, for its own ledger)."""

    arrays: Arrays
    metrics: dict[str, Any]
    history: list[HistoryEntry]
    fingerprint: str


def release_once(
    state_dir: Path,
    *,
    run_id: str,
    server_round: int,
    plan: Callable[[PrivacyLedger], budget.RoundPlan],
    make: Callable[[PrivacyLedger, budget.RoundPlan], Made],
    store_key: str | None = None,
) -> tuple[Arrays, dict[str, Any]]:
    """(arrays, metrics) to send for one DP release (see the module docstring).

    ``store_key`` names the stored release when a run keeps more than one (the feature statistics
    are kept apart from the training rounds, whose stored release replaces its predecessor each
    round).
    """
    ledger = PrivacyLedger(state_dir)
    key = store_key or run_id
    stored = load_release(state_dir, key, server_round)
    if stored is not None and ledger.has_release(run_id, server_round):
        log.info("Release %s of this run was already made; sending it again", server_round)
        return stored
    round_plan = plan(ledger)
    made = make(ledger, round_plan)
    save_release(state_dir, key, server_round, made.arrays, made.metrics)
    budget.record_release(
        ledger,
        round_plan,
        server_round=server_round,
        history=made.history,
        fingerprint=made.fingerprint,
    )
    return made.arrays, made.metrics
