"""Model checkpoints: ``NAME.pt`` (weights) beside ``NAME.json`` (how to rebuild it).

Files are written to a temporary name, fsynced and renamed, so a crash never
leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedscan import __version__
from fedscan.common.errors import DataError
from fedscan.common.files import atomic_write_bytes
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.tasks import BINARY, outputs


def save_checkpoint(
    path: Path, model_name: str, state_dict: dict[str, torch.Tensor], **meta: Any
) -> None:
    """Write weights to ``path`` and metadata to ``path.with_suffix('.json')``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, weights)
    atomic_write_bytes(path, weights.getvalue())
    info = {
        "model": model_name,
        "input_size": get_model_spec(model_name).input_size,
        "fedscan_version": __version__,
        "threshold": 0.5,
        **meta,
    }
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(info, indent=2).encode())


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``; errors say which file is missing or wrong."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise DataError(f"Checkpoint {path} needs both {path.name} and {meta_path.name}.")
    try:
        meta = json.loads(meta_path.read_text())
        classes = tuple(meta.get("classes") or ())  # a head per class (or per structure)
        model = build_model(
            meta["model"],
            options=str(meta.get("classical", "")),
            outputs=outputs(str(meta.get("task", BINARY)), classes),
        )
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        raise DataError(
            f"Checkpoint {path} or {meta_path.name} is unreadable ({type(exc).__name__})."
        ) from exc
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise DataError(
            f"Checkpoint {path} does not hold a {meta['model']!r} model as {meta_path.name} says "
            f"({len(set(expected) - set(state))} parameters missing, "
            f"{len(set(state) - set(expected))} unexpected); was it saved from another model?"
        )
    model.load_state_dict(state)
    return model, meta
