"""One labels-CSV row → the integer label of its image, for each task kind (``common/tasks.py``).

- binary: the class column holds 0/1 (or yes/no, true/false, positive/negative);
- multiclass: the class column holds one of the run's class names (case-insensitive) or its
  index 0..K-1;
- multilabel: one 0/1 column per finding (``label-columns``, or every run finding that is a
  column of the CSV), or the class column holding the present findings separated by ``|``
  (empty, ``none`` or ``normal`` for none): the label is a bit set, bit k for finding k.

Invariant: a row that names a class outside the run's list is never folded into another class;
it is reported as unknown (LABEL_UNKNOWN_CLASS) and its image is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedscan.common.errors import DataError
from fedscan.common.tasks import BINARY, MULTICLASS, MULTILABEL, LabelScheme

_TRUE, _FALSE = ("1", "1.0", "true", "yes", "positive"), ("0", "0.0", "false", "no", "negative")
_NO_FINDING = ("", "none", "normal", "no finding")


@dataclass(frozen=True)
class Parsed:
    """A row's label, or why it has none (``unknown``: it names a class the run did not declare)."""

    label: int | None
    problem: str = ""
    unknown: bool = False


RowParser = Callable[[Mapping[str, str | None]], Parsed]


def parse_binary(text: str) -> int | None:
    value = text.strip().lower()
    return 1 if value in _TRUE else 0 if value in _FALSE else None


def row_parser(
    scheme: LabelScheme, label_column: str, label_columns: Sequence[str], columns: Sequence[str]
) -> RowParser:
    """How this CSV's rows are read for ``scheme``; DataError (what to set) when its header cannot
    serve the scheme."""
    if scheme.kind == MULTILABEL:
        finding_columns = _finding_columns(scheme, label_columns, columns)
        if finding_columns:
            return lambda row: _bits(row, finding_columns)
    _require(label_column, columns, scheme)
    if scheme.kind == MULTICLASS:
        index = {name.lower(): i for i, name in enumerate(scheme.classes)}
        return lambda row: _one_class(row.get(label_column) or "", index)
    if scheme.kind == MULTILABEL:
        index = {name.lower(): i for i, name in enumerate(scheme.classes)}
        return lambda row: _named_findings(row.get(label_column) or "", index)
    return lambda row: _binary(row.get(label_column) or "")


def _require(column: str, columns: Sequence[str], scheme: LabelScheme) -> None:
    if column in columns:
        return
    wanted = {
        BINARY: "each image's 0/1 label",
        MULTICLASS: "each image's class name",
        MULTILABEL: "each image's findings separated by |",
    }[scheme.kind]
    extra = (
        "; or give each finding a 0/1 column named like it, or set label-columns"
        if scheme.kind == MULTILABEL
        else ""
    )
    raise DataError(
        f"The labels CSV has no '{column}' column for {wanted} (columns: "
        f"{', '.join(columns) or 'none'}); set label-column{extra}."
    )


def _finding_columns(
    scheme: LabelScheme, label_columns: Sequence[str], columns: Sequence[str]
) -> dict[int, str]:
    """Finding index → its 0/1 column; empty when the CSV names findings in one column instead."""
    if not label_columns:
        named = {i: name for i, name in enumerate(scheme.classes) if name in columns}
        return named if len(named) == len(scheme.classes) else {}
    missing = [column for column in label_columns if column not in columns]
    if missing:
        raise DataError(
            f"label-columns names {', '.join(missing)}, which the labels CSV lacks (columns: "
            f"{', '.join(columns) or 'none'})."
        )
    undeclared = [column for column in label_columns if column not in scheme.classes]
    if undeclared:
        raise DataError(
            f"label-columns {', '.join(undeclared)} are not findings of this run "
            f"({', '.join(scheme.classes)}); remove them or ask the coordinator to declare them."
        )
    absent = [name for name in scheme.classes if name not in label_columns]
    if absent:
        raise DataError(
            f"The run's findings {', '.join(absent)} have no column in label-columns; add a 0/1 "
            "column for each (0 where the site never labels it)."
        )
    return {scheme.classes.index(column): column for column in label_columns}


def _binary(text: str) -> Parsed:
    label = parse_binary(text)
    return Parsed(label) if label is not None else Parsed(None, "not 0/1")


def _one_class(text: str, index: Mapping[str, int]) -> Parsed:
    value = text.strip().lower()
    if value.isdigit():
        position = int(value)
        if position < len(index):
            return Parsed(position)
        return Parsed(None, f"class index {position} is beyond the run's {len(index)}", True)
    if value in index:
        return Parsed(index[value])
    if not value:
        return Parsed(None, "no class")
    return Parsed(None, "a class the run did not declare", True)


def _named_findings(text: str, index: Mapping[str, int]) -> Parsed:
    bits = 0
    for name in (part.strip().lower() for part in text.split("|")):
        if name in _NO_FINDING:
            continue
        if name not in index:
            return Parsed(None, "a finding the run did not declare", True)
        bits |= 1 << index[name]
    return Parsed(bits)


def _bits(row: Mapping[str, str | None], finding_columns: Mapping[int, str]) -> Parsed:
    bits = 0
    for bit, column in finding_columns.items():
        value = parse_binary(row.get(column) or "")
        if value is None:
            return Parsed(None, f"'{column}' is not 0/1")
        bits |= value << bit
    return Parsed(bits)
