"""Warm start: a run's round-1 model from an earlier run's ``final.pt`` or a plain state dict.

Invariants:

- Only the coordinator reads the file (sites receive the result as round 1's global model, as
  any round's). Its path never leaves the coordinator; its SHA-256 does (``init-weights-sha256``,
  recorded once by :func:`pinned`), so each site's approval covers the starting weights.
- The file is read once: its bytes are hashed, checked against the run's recorded SHA-256, and
  only then unpickled, with ``weights_only=True`` (tensors and plain containers: a pickle of any
  other object is refused, never run).
- Parameters are matched by name and shape (:mod:`fedscan.common.models.weight_match`); the rest
  keep the values the run's seed gives them. A file that is missing, unreadable, not a dict of
  tensors, or that matches none of the model's parameters is a one-line FedscanError that says
  what to do: never a silent random start.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError, DataError, ModelError
from fedscan.common.models.networks import build_model
from fedscan.common.models.weight_match import (
    IGNORED,
    LOADED,
    NEW,
    Shape,
    WeightMatch,
    match_shapes,
    nothing_matched,
)
from fedscan.common.tasks import outputs

log = logging.getLogger(__name__)
_WHAT_TO_GIVE = (
    "give an earlier run's final.pt (runs/<id>/final.pt) or a state dict saved with "
    "torch.save(model.state_dict(), PATH)"
)


@dataclass(frozen=True)
class WeightsFile:
    """A weights file as read: its tensors, their hash, and what the file says it is."""

    path: Path
    sha256: str
    tensors: dict[str, torch.Tensor]
    source: str  # e.g. "fedscan small-cnn of run 20260101-…" or "a state dict"
    model: str  # the model a fedscan checkpoint's JSON names; "" for a plain state dict


def pinned(config: RunConfig) -> RunConfig:
    """``config`` with its starting weights' SHA-256 recorded; unchanged without init-weights or
    once recorded (a resumed run keeps the hash it started with)."""
    if not config.init_weights or config.init_weights_sha256:
        return config
    digest = hashlib.sha256(_read_bytes(Path(config.init_weights))).hexdigest()
    return replace(config, init_weights_sha256=digest)


def start_state(config: RunConfig) -> tuple[dict[str, torch.Tensor], WeightMatch | None]:
    """Round 1's global model: the seed's random weights, then init-weights' wherever name and
    shape match (logged); the match is None for a run without starting weights."""
    train = config.train
    model = build_model(
        train.model,
        seed=config.seed,
        options=train.classical,
        outputs=outputs(train.task, train.classes),
    )
    state = dict(model.state_dict())
    if not config.init_weights:
        return state, None
    weights = read_weights(Path(config.init_weights), config.init_weights_sha256)
    entries = match_shapes(_shapes(state), _shapes(weights.tensors))
    match = WeightMatch(str(weights.path), weights.sha256, weights.source, entries)
    if not match.names(LOADED):
        raise ModelError(nothing_matched(match, train.model, weights.model))
    _log(match)
    loaded = set(match.names(LOADED))
    return {
        name: weights.tensors[name].to(value.dtype).contiguous() if name in loaded else value
        for name, value in state.items()
    }, match


def read_weights(path: Path, sha256: str = "") -> WeightsFile:
    """The tensors of ``path`` (weights only), checked against ``sha256`` when one is recorded."""
    payload = _read_bytes(path)
    digest = hashlib.sha256(payload).hexdigest()
    if sha256 and digest != sha256:
        raise ConfigError(
            f"init-weights {path} changed since the run recorded it (SHA-256 {digest[:12]}…, "
            f"recorded {sha256[:12]}…); put the recorded file back or start a new run."
        )
    model, source = _described(path)
    return WeightsFile(path, digest, _state_dict(path, payload), source, model)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"init-weights: cannot read {path} ({reason}); {_WHAT_TO_GIVE}."
        ) from None


def _state_dict(path: Path, payload: bytes) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of some files
            loaded = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # a foreign file fails in any way (a text file: KeyError)
        raise DataError(
            f"{path} is not a weights file (torch.load(weights_only=True) refused it: "
            f"{type(error).__name__}; fedscan never unpickles anything but tensors); "
            f"{_WHAT_TO_GIVE}."
        ) from None
    if not isinstance(loaded, dict) or not loaded:
        raise DataError(f"{path} holds {_kind(loaded)}, not a state dict; {_WHAT_TO_GIVE}.")
    others = [str(key) for key, value in loaded.items() if not _is_parameter(key, value)]
    if others:
        raise DataError(
            f"{path} holds more than a state dict ({', '.join(others[:3])} are not tensors); "
            "save the weights alone: torch.save(model.state_dict(), PATH) (of a training "
            'checkpoint, e.g. torch.save(checkpoint["state_dict"], PATH)).'
        )
    return loaded


def _is_parameter(key: object, value: object) -> bool:
    return isinstance(key, str) and isinstance(value, torch.Tensor)


def _kind(value: object) -> str:
    return "an empty dict" if isinstance(value, dict) else f"a {type(value).__name__}"


def _described(path: Path) -> tuple[str, str]:
    """(the model a fedscan checkpoint's JSON beside it names, a few words on what it is)."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        model = str(meta["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", "a state dict"
    run = f" of run {meta['run_id']}" if meta.get("run_id") else ""
    return model, f"fedscan {model}{run}"


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, Shape]:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def _log(match: WeightMatch) -> None:
    counts = match.counts()
    log.info(
        "Starting weights %s (SHA-256 %s, %s): %s parameters loaded, %s new, %s ignored",
        match.file,
        match.sha256,
        match.source,
        counts[LOADED],
        counts[NEW],
        counts[IGNORED],
    )
    for parameter, status, shape, file_shape in match.rows():
        log.info("  %s %s (model %s, file %s)", status, parameter, shape, file_shape)
