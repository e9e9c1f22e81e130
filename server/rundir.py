"""The run directory ``runs/<run-id>/``: config.json, metrics.jsonl, models.

metrics.jsonl has one JSON object per round: per-site train and evaluation
metrics, ε per site, the aggregate, and the refusals the round received.
"""

from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedscan.common.checkpoint import atomic_write_bytes, save_checkpoint
from fedscan.common.jsonsafe import json_safe


RUN_CONFIG_FILE = "run-config.json"


def new_run_id() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunDirectory:
    path: Path
    run_id: str

    @classmethod
    def create(cls, root: Path, run_id: str | None = None, *, exist_ok: bool = False) -> "RunDirectory":
        """A new run directory; ``exist_ok`` lets a ServerApp adopt one its launcher prepared."""
        run_id = run_id or new_run_id()
        path = Path(root) / run_id
        path.mkdir(parents=True, exist_ok=exist_ok)
        return cls(path, run_id)

    def write_status(self, state: str, **details: Any) -> None:
        """``status.json``: running, completed or failed (with a reason a person can act on)."""
        record = {"state": state, "run_id": self.run_id, **details}
        atomic_write_bytes(self.path / "status.json", json.dumps(json_safe(record), indent=2).encode())

    def read_status(self) -> dict[str, Any]:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / "config.json", json.dumps(json_safe(config), indent=2).encode())

    def write_json(self, name: str, document: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / name, json.dumps(json_safe(document)).encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """metrics.jsonl holding exactly ``records`` (a resumed run drops rounds it will redo)."""
        lines = "".join(json.dumps(json_safe(record)) + "\n" for record in records)
        atomic_write_bytes(self.path / "metrics.jsonl", lines.encode())

    def write_run_config(self, flat: dict[str, Any]) -> None:
        """The run's settings in run-config form: what ``--resume`` continues with."""
        atomic_write_bytes(self.path / RUN_CONFIG_FILE, json.dumps(flat, indent=2).encode())

    def read_run_config(self) -> dict[str, Any] | None:
        path = self.path / RUN_CONFIG_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def save_model(self, name: str, model_name: str, state_dict: dict[str, torch.Tensor],
                   **meta: Any) -> Path:
        path = self.path / f"{name}.pt"
        save_checkpoint(path, model_name, state_dict, run_id=self.run_id, **meta)
        return path
