"""Do the maps point at the finding? The energy-based pointing game (Wang et al. 2020) against a
randomly initialised model of the same architecture (Adebayo et al. 2018).

A map's score is the fraction of its mass inside the finding's true region (1: all of it; a uniform
map scores the region's share of the image). A method whose trained-model maps score no better
than the random model's explains the architecture and the image, not what the model learnt.

Invariants: only images with a finding (a non-empty region) are scored; a map with no mass has no
score (NaN, left out of the means and counted apart); maps come from :func:`class_maps`, so the
sanity check measures exactly what ``fedscan explain`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.explain.compute import class_maps
from fedscan.common.explain.settings import ExplainSettings
from fedscan.common.tasks import BINARY


def mass_inside(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per map (N × H × W, non-negative) the fraction of its mass inside ``regions`` (N × H × W,
    truthy inside); NaN where a map has no mass."""
    inside = (maps * (regions > 0)).sum(axis=(1, 2))
    total = maps.sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(maps), np.nan), where=total > 0)


def peak_inside(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """The classic pointing game: whether each map's maximum lies inside its region."""
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return (regions.reshape(len(regions), -1) > 0)[np.arange(len(maps)), flat]


@dataclass(frozen=True)
class PointingScore:
    """One method on one model: mean mass inside, peak-inside rate, images scored and left out."""

    method: str
    model: str  # "trained" or "random"
    mass: float
    peak: float
    scored: int
    massless: int


def pointing_scores(
    model: nn.Module,
    images: ImageSet,
    *,
    model_name: str,
    label: str,
    settings: ExplainSettings,
) -> list[PointingScore]:
    """Each method's pointing scores of a binary classifier on the images that have a finding."""
    regions = images.require_masks().numpy()[:, 0]
    with_finding = np.flatnonzero(regions.reshape(len(regions), -1).max(axis=1) > 0)
    maps = class_maps(
        model.eval(),
        images.images[with_finding],
        model_name=model_name,
        kind=BINARY,
        classes=1,
        settings=settings,
    )
    found = []
    for method, per_class in maps.items():
        mass = mass_inside(per_class[:, 0], regions[with_finding])
        peak = peak_inside(per_class[:, 0], regions[with_finding])
        valid = ~np.isnan(mass)
        found.append(
            PointingScore(
                method,
                label,
                float(mass[valid].mean()) if valid.any() else float("nan"),
                float(peak[valid].mean()) if valid.any() else float("nan"),
                int(valid.sum()),
                int((~valid).sum()),
            )
        )
    return found


def randomisation_test(
    trained: nn.Module, images: ImageSet, *, model_name: str, settings: ExplainSettings, seed: int
) -> list[PointingScore]:
    """Pointing scores of ``trained`` and of a freshly initialised ``model_name`` (``seed``)."""
    from fedscan.common.models.networks import build_model

    random = build_model(model_name, seed=seed, check_dp=False)
    return [
        *pointing_scores(
            trained, images, model_name=model_name, label="trained", settings=settings
        ),
        *pointing_scores(random, images, model_name=model_name, label="random", settings=settings),
    ]


def region_share(images: ImageSet) -> float:
    """The mean share of the image inside the region, over images with a finding: the score of
    a uniform map."""
    regions = images.require_masks().numpy()[:, 0] > 0
    shares = regions.mean(axis=(1, 2))
    return float(shares[shares > 0].mean()) if (shares > 0).any() else float("nan")
