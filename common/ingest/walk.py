"""Which files of a site folder a scan reads: every regular file, sorted, except hidden entries,
the labels CSV, the masks it names and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from fedscan.common.ingest.labels import DEFAULT_LABELS_FILE, LabelSpec, LabelTable


def scan_files(site_dir: Path, *, exclude: frozenset[Path] = frozenset()) -> tuple[list[str], int]:
    """Relative POSIX paths of every regular file, sorted; hidden entries are counted, not read."""
    found, ignored = [], 0
    for root, dirs, names in os.walk(site_dir):
        hidden = [d for d in dirs if d.startswith(".") or (Path(root) / d).resolve() in exclude]
        ignored += len(hidden)
        dirs[:] = sorted(d for d in dirs if d not in hidden)
        for name in names:
            path = Path(root) / name
            if name.startswith(".") or path.resolve() in exclude:
                ignored += name.startswith(".")
                continue
            if path.is_file():
                found.append(path.relative_to(site_dir).as_posix())
    return sorted(found), ignored


def excluded_paths(
    site_dir: Path, labels: LabelSpec, cache_dir: str, table: LabelTable
) -> frozenset[Path]:
    """What a scan skips: the labels CSV, the masks it names and the cache folder."""
    paths = {labels.csv_path(site_dir).resolve(), (site_dir / DEFAULT_LABELS_FILE).resolve()}
    paths.update((site_dir / mask).resolve() for mask in table.masks.values())
    if cache_dir:
        paths.add(Path(cache_dir).resolve())
    return frozenset(paths)
