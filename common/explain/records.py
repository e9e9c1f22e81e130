"""One typed record per explained image, and the order the index page lists them in.

Invariants: a record holds the image at the model's input size, what the image shows (``truth``),
what the model predicts at the checkpoint's threshold(s) (``predicted``), its score per class and
one map per (method, class) in [0, 1]. Records live in the hospital's memory and its ``--out``
folder only; no record type has a ``to_json`` for a message, and none is ever put in a reply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

FALSE_POSITIVE = "FP"
FALSE_NEGATIVE = "FN"


@dataclass(frozen=True)
class ImageExplanation:
    """One image's prediction and maps.

    ``key`` is the site's local key (a relative path; for the site's own eyes); ``classes`` the
    names of the model's outputs (binary: one, ``finding``); ``region`` the true finding mask at
    the input size when the site has one.
    """

    key: str
    image: np.ndarray  # H × W in [0, 1]
    classes: tuple[str, ...]
    scores: tuple[float, ...]
    truth: tuple[str, ...]
    predicted: tuple[str, ...]
    maps: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)
    region: np.ndarray | None = None

    @property
    def score(self) -> float:
        """The highest class score: what the index page sorts by."""
        return max(self.scores) if self.scores else 0.0

    @property
    def errors(self) -> tuple[str, ...]:
        """FP when a predicted class is absent, FN when a present class is missed."""
        found = []
        if set(self.predicted) - set(self.truth):
            found.append(FALSE_POSITIVE)
        if set(self.truth) - set(self.predicted):
            found.append(FALSE_NEGATIVE)
        return tuple(found)


def review_order(records: Iterable[ImageExplanation]) -> list[ImageExplanation]:
    """False positives first, then false negatives, then the rest; by score (highest first)
    within each group. An image that is both comes with the false positives."""

    def rank(record: ImageExplanation) -> tuple[int, float, str]:
        errors = record.errors
        group = 0 if FALSE_POSITIVE in errors else 1 if FALSE_NEGATIVE in errors else 2
        return group, -record.score, record.key

    return sorted(records, key=rank)


def decided(
    scores: np.ndarray, classes: tuple[str, ...], thresholds: Mapping[str, float], *, single: bool
) -> tuple[str, ...]:
    """The classes predicted from one image's ``scores``: the top one (``single``: multi-class)
    or each at or above its threshold."""
    if single:
        return (classes[int(np.argmax(scores))],)
    return tuple(
        name
        for name, value in zip(classes, scores, strict=True)
        if value >= thresholds.get(name, 0.5)
    )
