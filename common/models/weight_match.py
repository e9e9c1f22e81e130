"""How starting weights fit a run's model: each parameter matched by name and shape.

Invariants:

- A model parameter is ``loaded`` when the file holds a tensor of the same name and shape, else
  ``new`` (absent from the file, or another shape: e.g. a head with another class count) and keeps
  its seeded random value; a tensor of the file that the model lacks is ``ignored``. Nothing is
  matched by position, reshaped or renamed.
- The match is shapes and names only (no torch): it is written into the run directory
  (``init-weights.json``), read back by the model card, and printed as the same rows the
  coordinator logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOADED, NEW, IGNORED = "loaded", "new", "ignored"
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Entry:
    """One parameter: its status, its shape in the model and in the file (None: absent there)."""

    name: str
    status: str
    shape: Shape | None
    file_shape: Shape | None


def match_shapes(model: Mapping[str, Shape], given: Mapping[str, Shape]) -> tuple[Entry, ...]:
    """The model's parameters in its order, then the file's tensors it does not have."""
    entries = [
        Entry(name, LOADED if given.get(name) == shape else NEW, shape, given.get(name))
        for name, shape in model.items()
    ]
    entries += [
        Entry(name, IGNORED, None, shape) for name, shape in given.items() if name not in model
    ]
    return tuple(entries)


def shape_text(shape: Shape | None) -> str:
    """``16×1×3×3``; ``scalar`` for a 0-d tensor; ``—`` where there is none."""
    if shape is None:
        return "—"
    return "×".join(str(size) for size in shape) if shape else "scalar"


@dataclass(frozen=True)
class WeightMatch:
    """What a weights file (``file``, ``sha256``; ``source`` says what it is) gave a model."""

    file: str
    sha256: str
    source: str
    entries: tuple[Entry, ...]

    def names(self, status: str) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries if entry.status == status)

    def counts(self) -> dict[str, int]:
        return {status: len(self.names(status)) for status in (LOADED, NEW, IGNORED)}

    def title(self) -> str:
        """``Starting weights final.pt: 12 of 14 parameters loaded, 2 new, 0 ignored``."""
        counts, total = self.counts(), len(self.entries) - len(self.names(IGNORED))
        return (
            f"Starting weights {Path(self.file).name}: {counts[LOADED]} of {total} parameters "
            f"loaded, {counts[NEW]} new, {counts[IGNORED]} ignored"
        )

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(parameter, status, shape in the model, shape in the file) in the model's order, each
        run of consecutive loaded parameters as one row (a DenseNet has 364 tensors)."""
        rows: list[tuple[str, str, str, str]] = []
        run: list[Entry] = []
        for entry in (*self.entries, None):
            if entry is not None and entry.status == LOADED:
                run.append(entry)
                continue
            if len(run) == 1:
                rows.append(_row(run[0]))
            elif run:
                tensors = f"{len(run)} tensors"
                rows.append((f"{run[0].name} … {run[-1].name}", LOADED, tensors, "same shapes"))
            run = []
            if entry is not None:
                rows.append(_row(entry))
        return rows

    def summary(self) -> str:
        """One sentence for the model card: the file, its hash, and what each status holds."""
        counts = self.counts()
        new = ", ".join(self.names(NEW)) or "none"
        ignored = ", ".join(self.names(IGNORED)) or "none"
        return (
            f"`{Path(self.file).name}` ({self.source}), SHA-256 `{self.sha256}`: "
            f"{counts[LOADED]} parameters loaded; new (random, the run's seed): {new}; "
            f"ignored (in the file, not in the model): {ignored}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "source": self.source,
            "parameters": [
                [entry.name, entry.status, entry.shape, entry.file_shape] for entry in self.entries
            ],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> WeightMatch:
        entries = tuple(
            Entry(str(name), str(status), _shape(shape), _shape(file_shape))
            for name, status, shape, file_shape in document["parameters"]
        )
        return cls(str(document["file"]), str(document["sha256"]), str(document["source"]), entries)


def _row(entry: Entry) -> tuple[str, str, str, str]:
    return (entry.name, entry.status, shape_text(entry.shape), shape_text(entry.file_shape))


def _shape(value: Any) -> Shape | None:
    return None if value is None else tuple(int(size) for size in value)


def nothing_matched(match: WeightMatch, model: str, saved_from: str = "") -> str:
    """The one-line error for a file that fits none of the model's parameters, with the fix."""
    ours = ", ".join([entry.name for entry in match.entries if entry.shape is not None][:3])
    theirs = ", ".join([entry.name for entry in match.entries if entry.file_shape is not None][:3])
    hint = (
        f"it holds a {saved_from!r} model: set model = {saved_from!r}, or start from weights of "
        f"a {model!r} model"
        if saved_from and saved_from != model
        else f"give weights saved from a {model!r} model (e.g. an earlier run's final.pt)"
    )
    return (
        f"{match.file} matches none of the {len(match.entries) - len(match.names(IGNORED))} "
        f"parameters of model {model!r} by name and shape (the model's: {ours}, …; the file's: "
        f"{theirs}, …); {hint}."
    )
