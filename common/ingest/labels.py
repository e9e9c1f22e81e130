"""A site's labels CSV: which column identifies an image, which holds its class (and its mask).

The key column matches either the file's path relative to the site folder
(``key = "path"``) or a DICOM attribute (SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID,
AccessionNumber, PatientID); a study- or patient-level key labels every image
it matches. For volumes (a 3-D model) a row labels a series: ``path`` is then the series' folder
(or, for one enhanced multi-frame file, the file), and SOPInstanceUID is refused.
An optional patient column groups images for the split when the files carry no PatientID
(PNG/JPEG sites). For segmentation a mask column names each image's mask file; the class column
is then not needed (an image's class is whether its mask marks anything).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest.classlabels import Parsed, RowParser, row_parser
from fedscan.common.settings import setting
from fedscan.common.tasks import LabelScheme
from fedscan.common.values import Names

KEY_KINDS = (
    "path",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "AccessionNumber",
    "PatientID",
)
DEFAULT_LABELS_FILE = "labels.csv"
_SNAKE = {
    "SOPInstanceUID": "sop_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "AccessionNumber": "accession_number",
    "PatientID": "patient_id",
}


@dataclass(frozen=True)
class LabelSpec:
    """How to read a site's labels; every field has the convention's default."""

    csv: str = setting(
        "",
        key="labels-csv",
        path=True,
        help="The labels CSV (default: labels.csv in the data folder).",
    )
    key: str = setting(
        "path",
        help="What the CSV's key column matches: " + " | ".join(KEY_KINDS) + " (a "
        "study or patient key labels every image it matches).",
    )
    key_column: str = setting(
        "",
        help="The CSV column holding the key (default: file for path keys, else "
        "the attribute's name or its snake_case).",
    )
    label_column: str = setting(
        "label",
        help="The CSV column holding each image's label: 0/1 (binary), a class name or index "
        "(multiclass), or its findings separated by | (multilabel).",
    )
    label_columns: Names = setting(
        (),
        help="Multilabel: one 0/1 column per finding, named like the run's findings (default: "
        "those columns when the CSV has one for every finding, else label-column).",
    )
    patient_column: str = setting(
        "",
        help="The CSV column grouping images by patient for the split "
        "(default: the DICOM PatientID).",
    )
    mask_column: str = setting(
        "mask",
        help="The CSV column naming each image's mask file, relative to the "
        "data folder (segmentation).",
    )

    def __post_init__(self) -> None:
        if self.key not in KEY_KINDS:
            raise ConfigError(f"Unknown label key {self.key!r}; use one of {', '.join(KEY_KINDS)}.")

    def csv_path(self, site_dir: Path) -> Path:
        return Path(self.csv).expanduser() if self.csv else Path(site_dir) / DEFAULT_LABELS_FILE

    def key_columns(self) -> tuple[str, ...]:
        if self.key_column:
            return (self.key_column,)
        return ("file", "path") if self.key == "path" else (self.key, _SNAKE[self.key])


@dataclass(frozen=True)
class LabelTable:
    """Labels by key. Keys with an unusable label are kept apart, with the reason."""

    labels: dict[str, int]
    invalid: dict[str, str] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    masks: dict[str, str] = field(default_factory=dict)  # key → mask path (relative, POSIX)
    unknown: frozenset[str] = frozenset()  # keys whose row names a class the run did not declare


def normalise_path(text: str) -> str:
    """A relative path as the CSV and the scanner both write it: POSIX, no ``./``."""
    text = text.strip().replace("\\", "/")
    if text and "//" not in text and "/./" not in text and not text.startswith("./"):
        if not text.endswith(("/", "/.")) and text != ".":
            return text  # already normal: PurePosixPath would return it unchanged (10 µs a row)
    return str(PurePosixPath(text))


def read_label_table(
    spec: LabelSpec, site_dir: Path, *, masks: bool = False, scheme: LabelScheme | None = None
) -> LabelTable:
    """Read the CSV; raise :class:`DataError` (with what to fix) when it is unusable as a whole.

    ``masks`` (segmentation): the mask column is required and the class column ignored; every keyed
    row counts as labelled, and images without a mask are rejected later, one by one. ``scheme``:
    the run's task kind and classes (default binary), see :mod:`fedscan.common.ingest.classlabels`.
    """
    path = spec.csv_path(site_dir)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            key_column = _pick_key_column(spec, columns)
            if masks and spec.mask_column not in columns:
                raise DataError(
                    f"The labels CSV has no '{spec.mask_column}' column (columns: "
                    f"{', '.join(columns) or 'none'}); segmentation needs one naming each "
                    "image's mask file; set mask-column."
                )
            parser = (
                None
                if masks
                else row_parser(
                    scheme or LabelScheme(), spec.label_column, spec.label_columns, columns
                )
            )
            if spec.patient_column and spec.patient_column not in columns:
                raise DataError(f"The labels CSV has no '{spec.patient_column}' patient column.")
            return _collect(
                reader,
                spec,
                key_column,
                parser=parser,
                mask_column=spec.mask_column if spec.mask_column in columns else "",
            )
    except OSError as exc:
        raise DataError(
            f"Cannot read the labels CSV ({exc.strerror}); check the labels-csv setting."
        ) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"The labels CSV is not valid UTF-8 CSV ({type(exc).__name__}).") from exc


def tasks_supported(spec: LabelSpec, site_dir: Path) -> tuple[str, ...]:
    """The tasks a site's labels CSV can serve, from its header: classification with a class column,
    segmentation with a mask column. Raises :class:`DataError` when the CSV cannot be read."""
    try:
        with open(spec.csv_path(site_dir), newline="", encoding="utf-8-sig") as handle:
            columns = next(csv.reader(handle), [])
    except OSError as exc:
        raise DataError(
            f"Cannot read the labels CSV ({exc.strerror}); check the labels-csv setting."
        ) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"The labels CSV is not valid UTF-8 CSV ({type(exc).__name__}).") from exc
    found = (("classification", spec.label_column), ("segmentation", spec.mask_column))
    return tuple(task for task, column in found if column in columns)


def _pick_key_column(spec: LabelSpec, columns: Sequence[str]) -> str:
    for candidate in spec.key_columns():
        if candidate in columns:
            return candidate
    raise DataError(
        f"The labels CSV has no key column for key '{spec.key}' (looked for "
        f"{' or '.join(spec.key_columns())}; columns: {', '.join(columns) or 'none'}); "
        "set --key-column."
    )


def _collect(
    reader: csv.DictReader,
    spec: LabelSpec,
    key_column: str,
    *,
    parser: RowParser | None,
    mask_column: str,
) -> LabelTable:
    labels: dict[str, int] = {}
    invalid: dict[str, str] = {}
    unknown: set[str] = set()
    patients: dict[str, str] = {}
    mask_paths: dict[str, str] = {}
    rows = 0
    for row in reader:
        rows += 1
        key = (row.get(key_column) or "").strip()
        if not key:
            continue
        key = normalise_path(key) if spec.key == "path" else key
        if mask_column and (row.get(mask_column) or "").strip():
            mask_paths[key] = normalise_path(row[mask_column])
        # Segmentation: the class is derived from the mask (placeholder 0 until then).
        parsed = Parsed(0) if parser is None else parser(row)
        label = parsed.label
        if label is None:
            invalid[key] = parsed.problem
            if parsed.unknown:
                unknown.add(key)
        elif key in labels and labels[key] != label:
            invalid[key] = "two different labels"
        elif key not in invalid:
            labels[key] = label
        if spec.patient_column and (row.get(spec.patient_column) or "").strip():
            patients[key] = row[spec.patient_column].strip()
    for key in invalid:
        labels.pop(key, None)
    return LabelTable(labels, invalid, patients, rows, mask_paths, frozenset(unknown))
