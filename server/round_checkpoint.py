"""Coordinator checkpoints: one file per completed round, enough to resume the run.

``RUN_DIR/checkpoints/round-NNNNN.ckpt`` holds the global model after the
round's aggregation, the strategy's own state (FedAdam's moments, central
DP's release count), the metrics history, the update gate's memory, the RNG
states and the run's flat config. The file is a header line, the SHA-256 of
the payload, then the payload (a ``torch.save`` of tensors and one JSON
string, loadable with ``weights_only=True``). It is written to a temporary
name, fsynced and renamed; a file whose checksum does not match is never
loaded — the previous valid one is used instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedscan.common.errors import DamagedCheckpoint
from fedscan.common.files import atomic_write_bytes, json_safe
from fedscan.server.rundir import CHECKPOINT_DIR

log = logging.getLogger(__name__)

MAGIC = b"fedscan-round-checkpoint v1\n"
KEEP = 3  # the newest files kept: a damaged newest one still leaves two to fall back on
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RoundCheckpoint:
    """The coordinator's state after ``round``'s aggregation."""

    round: int
    arrays: Tensors
    state: dict[str, Any]  # JSON-safe: config, the run log, strategy scalars, RNG states
    strategy_tensors: dict[str, Tensors] = field(default_factory=dict)


def checkpoint_path(run_path: Path, server_round: int) -> Path:
    return Path(run_path) / CHECKPOINT_DIR / f"round-{server_round:05d}.ckpt"


def encode(checkpoint: RoundCheckpoint) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "round": checkpoint.round,
            "arrays": checkpoint.arrays,
            "strategy_tensors": checkpoint.strategy_tensors,
            "state": json.dumps(json_safe(checkpoint.state)),
        },
        buffer,
    )
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode(blob: bytes) -> RoundCheckpoint:
    """The checkpoint in ``blob``; DamagedCheckpoint unless header and checksum are intact."""
    if not blob.startswith(MAGIC):
        raise DamagedCheckpoint("not a fedscan round checkpoint")
    digest, _, payload = blob[len(MAGIC) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise DamagedCheckpoint("checksum mismatch (truncated or altered)")
    try:
        stored = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        return RoundCheckpoint(
            int(stored["round"]),
            dict(stored["arrays"]),
            json.loads(stored["state"]),
            {k: dict(v) for k, v in stored["strategy_tensors"].items()},
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise DamagedCheckpoint(f"unreadable payload ({type(error).__name__})") from error


def write_checkpoint(run_path: Path, checkpoint: RoundCheckpoint) -> Path:
    """Write atomically, then keep only the newest ``KEEP`` checkpoints."""
    path = checkpoint_path(run_path, checkpoint.round)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode(checkpoint))
    for old in sorted(path.parent.glob("round-*.ckpt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_latest(run_path: Path) -> RoundCheckpoint | None:
    """The newest checkpoint that passes its checksum; None when there is none (resume from round
    1)."""
    for path in sorted((Path(run_path) / CHECKPOINT_DIR).glob("round-*.ckpt"), reverse=True):
        try:
            return decode(path.read_bytes())
        except (DamagedCheckpoint, OSError) as error:
            log.warning(
                "Checkpoint %s is not usable (%s); falling back to the previous one",
                path.name,
                error,
            )
    return None


def rng_state() -> dict[str, Any]:
    """Python's and NumPy's global generators: Flower samples nodes and central DP draws noise from
    them."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "random": random.getstate(),
        "numpy": [name, np.asarray(keys).tolist(), position, has_gauss, cached],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
