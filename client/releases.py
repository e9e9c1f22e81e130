"""The site's last DP release per run, kept so a round asked for twice is answered, not retrained.

Training again would be a second release of the same data under fresh noise;
re-sending the stored update costs no privacy. Written atomically before the
ledger records the release (and before anything is sent).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

RELEASES_DIR = "releases"


def _path(state_dir: Path, run_id: str) -> Path:
    name = hashlib.blake2b(run_id.encode(), digest_size=12).hexdigest()
    return Path(state_dir) / RELEASES_DIR / f"{name}.pt"


def save_release(state_dir: Path, run_id: str, server_round: int, arrays: dict[str, torch.Tensor],
                 metrics: dict[str, Any]) -> None:
    path = _path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        torch.save({"run-id": run_id, "round": server_round, "arrays": arrays, "metrics": metrics}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def load_release(state_dir: Path, run_id: str, server_round: int) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The stored release of ``server_round``, or None if the last one stored is another round."""
    path = _path(state_dir, run_id)
    if not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored.get("run-id") != run_id or stored.get("round") != server_round:
        return None
    return stored["arrays"], stored["metrics"]
