"""Task kinds: what a run predicts for each image, and the class list every site checks against.

- ``classification`` (binary, the default): one 0/1 label per image; the model has one output.
- ``multiclass``: exactly one of the run's classes per image; one output per class (softmax).
- ``multilabel``: any subset of the run's findings per image; one output per finding (sigmoid).
- ``segmentation``: a mask per image: one structure (no classes; a binary mask, one sigmoid
  output) or, with K ≥ 2 structure names as classes, a label map (0 background, k the k-th
  structure; K + 1 softmax outputs).

Invariants: the class list is the run's (names and order), sent to every site with the run's
settings; a site never widens it — a row naming a class outside it is rejected with a coded reason.
Inside a site a label is one integer: the class index (multiclass) or a bit set of findings, bit k
for finding k (multilabel), so ingestion, caching and the patient split stay one code path for
every kind. Imports no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fedscan.common.errors import ConfigError

BINARY = "classification"
MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
SEGMENTATION = "segmentation"
CLASSIFICATION_KINDS = (BINARY, MULTICLASS, MULTILABEL)  # served by the classification models
MAX_CLASSES = 62  # a multi-label bit set fits an int64 label with room for the sign
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")


def model_task(kind: str) -> str:
    """The models' task that serves ``kind`` (a registry ModelSpec's ``task``)."""
    return BINARY if kind in CLASSIFICATION_KINDS else kind


def outputs(kind: str, classes: tuple[str, ...]) -> int:
    """Outputs of the model's head: one per class for multiclass and multilabel, background and
    one per structure for a label map, else one."""
    if kind in (MULTICLASS, MULTILABEL):
        return len(classes)
    return structures(kind, classes) + 1 if structures(kind, classes) else 1


def structures(kind: str, classes: tuple[str, ...]) -> int:
    """Structures of a label-map segmentation (its masks hold 0..K); 0 for a binary mask."""
    return len(classes) if kind == SEGMENTATION else 0


def check_classes(kind: str, classes: tuple[str, ...]) -> None:
    """The run's class list for ``kind``; ConfigError says what to change."""
    if kind not in (MULTICLASS, MULTILABEL, SEGMENTATION):
        if classes:
            raise ConfigError(
                f"classes is for task multiclass, multilabel or segmentation (a label map's "
                f"structures); task {kind} takes none (remove classes, or set task)."
            )
        return
    if kind == SEGMENTATION and len(classes) == 1:
        raise ConfigError(
            "A label map needs at least 2 structures in classes (mask value k = the k-th); for "
            "one structure leave classes out: its mask is binary."
        )
    least = {MULTICLASS: 2, MULTILABEL: 1, SEGMENTATION: 0}[kind]
    if len(classes) < least:
        raise ConfigError(
            f"Task {kind} needs classes: at least {least} class name(s), in order, e.g. "
            'classes = ["normal", "effusion", "nodule"].'
        )
    if len(classes) > MAX_CLASSES:
        raise ConfigError(f"At most {MAX_CLASSES} classes; got {len(classes)}.")
    bad = [name for name in classes if not _NAME.match(name)]
    if bad:
        raise ConfigError(
            f"Class names must be 1-64 letters, digits, spaces or _.+- (starting with a letter or "
            f"digit; no commas or |): {', '.join(repr(name) for name in bad)}."
        )
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise ConfigError(f"Class names repeat: {', '.join(repeated)}; each may appear once.")


def findings_of(label: int, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The findings a multi-label bit set holds, in the run's order."""
    return tuple(name for bit, name in enumerate(classes) if label >> bit & 1)


@dataclass(frozen=True)
class LabelScheme:
    """What a site's labels must hold for a run: the task kind and the run's class list."""

    kind: str = BINARY
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_classes(self.kind, self.classes)

    @property
    def outputs(self) -> int:
        return outputs(self.kind, self.classes)

    @property
    def structures(self) -> int:
        """Structures of a label map (0: binary mask, or not segmentation)."""
        return structures(self.kind, self.classes)

    def class_names(self) -> tuple[str, ...]:
        """The names per-class counts and metrics use (binary: negative, positive)."""
        return self.classes if self.kind in (MULTICLASS, MULTILABEL) else ("0", "1")

    def counts(self, labels: Iterable[int]) -> dict[str, int]:
        """Images per class (multi-label: per finding; an image counts for each it shows)."""
        values = list(labels)
        if self.kind == MULTILABEL:
            return {
                name: sum(v >> bit & 1 for v in values) for bit, name in enumerate(self.classes)
            }
        return {name: values.count(index) for index, name in enumerate(self.class_names())}
