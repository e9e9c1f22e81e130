"""Shadow models for offline LiRA: trained on random halves of a pool, as the target was trained.

Invariants: shadows come in complementary pairs (a random half of the pool, then the other half),
so every pool image is OUT of exactly half of the shadows and LiRA always has an OUT fit; each
shadow is trained by :func:`fedscan.common.models.training.train_local`, the function a site
trains with, on the settings and DP step it is given (under DP its noise and sampling draw on
the OS's entropy, as a site's do); only the shadows' φ on the pool leaves this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import ConfigError
from fedscan.common.membership.scores import QUERY_SHIFTS, view_confidence
from fedscan.common.models.networks import build_model
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.tasks import outputs
from fedscan.common.training_settings import TrainSettings

Progress = Callable[[int, int], None]  # (shadows trained, shadows in all)


def shadow_splits(pool_size: int, shadows: int, *, seed: int) -> np.ndarray:
    """S×N membership bits: ``shadows`` // 2 random halves of the pool, each with its complement."""
    if shadows < 2 or shadows % 2:
        raise ConfigError(
            f"shadows must be an even number of at least 2 (pairs of complementary halves); "
            f"got {shadows}."
        )
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(shadows // 2):
        half = np.zeros(pool_size, dtype=bool)
        half[rng.permutation(pool_size)[: pool_size // 2]] = True
        rows += [half, ~half]
    return np.stack(rows)


def train_shadows(
    pool: ImageSet,
    splits: np.ndarray,
    settings: TrainSettings,
    *,
    dp: DpStep | None,
    device: torch.device,
    buffers: dict[str, torch.Tensor] | None = None,
    shifts: tuple[tuple[int, int], ...] = QUERY_SHIFTS,
    progress: Progress | None = None,
) -> np.ndarray:
    """S×N: each shadow's φ on every pool image, the shadow trained on its row of ``splits``.

    ``buffers``: the target's non-trained state (a classical model's feature standardisation),
    given to every shadow so it sees the features the target saw. ``shifts``: the views each
    image is queried with (query the target with the same ones).
    """
    labels = pool.labels.numpy()
    phi = np.zeros(splits.shape, dtype=np.float64)
    for index, members in enumerate(splits):
        model = _fresh(settings, seed=settings.seed + 1 + index, buffers=buffers)
        subset = ImageSet(pool.images[members], pool.labels[members])
        shuffled = replace(settings, seed=settings.seed + 1 + index)  # without DP: its own order
        train_local(model, subset, shuffled, dp=dp, device=device)
        phi[index] = view_confidence(
            model, pool.images, labels, settings.task, device=device, shifts=shifts
        )
        if progress is not None:
            progress(index + 1, len(splits))
    return phi


def _fresh(
    settings: TrainSettings, *, seed: int, buffers: dict[str, torch.Tensor] | None
) -> torch.nn.Module:
    model = build_model(
        settings.model,
        seed=seed,
        options=settings.classical,
        outputs=outputs(settings.task, settings.classes),
    )
    if buffers:
        state = model.state_dict()
        state.update({name: value for name, value in buffers.items() if name in state})
        model.load_state_dict(state)
    return model
