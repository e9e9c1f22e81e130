"""Which parameters a run trains (run setting ``trainable``): all, the head, the last N layers, or
parameter-name prefixes.

Both roles resolve the setting against the same network built from the registry, with
:func:`trained_names`, so the names a site trains and sends back are exactly the names the
coordinator expects and aggregates; every other parameter stays the global model's. Frozen
parameters get no per-sample gradients (the DP step's cost and noise dimension drop with them).

Invariants: the result is never empty and keeps the model's parameter order; a layer is a module
that owns parameters itself, in registration order, so ``head`` is ``last:1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedscan.common.errors import ConfigError

if TYPE_CHECKING:  # the run configuration checks the setting without importing torch
    from torch import nn

    from fedscan.common.training_settings import TrainSettings

ALL, HEAD, LAST = "all", "head", "last:"


def check_spec(spec: str) -> None:
    """The setting's syntax; ConfigError says what is allowed."""
    if spec in (ALL, HEAD) or _prefixes(spec):
        if spec.startswith(LAST):
            _last_count(spec)
        return
    raise ConfigError(
        f"trainable {spec!r}: give all, head, last:N (the last N layers) or parameter-name "
        "prefixes separated by commas (e.g. 'head,features.8')."
    )


def trained_names(model: nn.Module, spec: str) -> tuple[str, ...]:
    """The names of the parameters ``model`` trains under ``spec``; ConfigError if none."""
    names = [name for name, _ in model.named_parameters()]
    if spec == ALL:
        return tuple(names)
    if spec == HEAD or spec.startswith(LAST):
        count = 1 if spec == HEAD else _last_count(spec)
        layers = [prefix for prefix, module in model.named_modules() if _owns_parameters(module)]
        chosen = {_owner(name) for name in names} & set(layers[-count:])
        return tuple(name for name in names if _owner(name) in chosen)
    prefixes = _prefixes(spec)
    unmatched = [p for p in prefixes if not any(_under(name, p) for name in names)]
    if unmatched:
        top = sorted({name.split(".")[0] for name in names})
        raise ConfigError(
            f"trainable: no parameter of this model is named {unmatched[0]!r} or below it; its "
            f"top-level names: {', '.join(top)}."
        )
    return tuple(name for name in names if any(_under(name, p) for p in prefixes))


def freeze_all_but(model: nn.Module, names: tuple[str, ...]) -> None:
    """Only ``names`` keep requiring gradients."""
    keep = set(names)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _prefixes(spec: str) -> list[str]:
    if spec.startswith(LAST) or spec in (ALL, HEAD):
        return [spec]
    parts = [part.strip() for part in spec.split(",")]
    return parts if parts and all(part and " " not in part for part in parts) else []


def _last_count(spec: str) -> int:
    count = spec[len(LAST) :]
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"trainable {spec!r}: last:N needs a whole number N ≥ 1, e.g. last:2.")
    return int(count)


def update_names(train: TrainSettings) -> tuple[str, ...] | None:
    """The parameters a site sends back under ``train.trainable`` for ``train.model``; None for
    ``all`` (the whole state dict, as without the setting)."""
    if train.trainable == ALL:
        return None
    from fedscan.common.models.networks import build_model
    from fedscan.common.tasks import outputs

    skeleton = build_model(
        train.model, options=train.classical, outputs=outputs(train.task, train.classes)
    )
    return trained_names(skeleton, train.trainable)
