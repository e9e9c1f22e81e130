"""``fedscan data check``'s report on the terminal: counts only (files, samples, rejections by
reason with what to do, sizes, modalities, makers, transfer syntaxes), never a path or a value of a
file; tables whole, as wide as their widest row off a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from fedscan.cli.console import print_table

if TYPE_CHECKING:  # the ingest stack only when a check runs: `fedscan --help` stays quick
    from fedscan.common.ingest import IngestReport


def _decoding(cache: dict[str, int] | None) -> str:
    if not cache:
        return "no cache"
    if cache.get("packed"):
        return "0 / 0 (the packed store answered)"
    reused = cache.get("reused", 0)
    kept = f" (+{reused} unchanged, from the packed store)" if reused else ""
    return f"{cache['hits']} / {cache['misses']}{kept}"


def _hashing(cache: dict[str, int] | None) -> str:
    """Files whose bytes were hashed against those the site index vouched for by their stat."""
    if not cache:
        return "all (no cache, no site index)"
    return f"{cache.get('hashed', 0)} / {cache.get('hash_reused', 0)}"


def print_report(console: Console, report: IngestReport, *, by_label: bool = True) -> None:
    """Counts only; ``by_label`` False where labels are class indices or bit sets (the caller
    shows per-class counts instead)."""
    summary = report.summary()
    overview = Table(title="Site data check", show_header=False, title_justify="left")
    cache = summary["cache"]
    for name, value in (
        ("files seen", summary["files"]),
        ("accepted", summary["accepted"]),
        ("rejected", summary["rejected"]),
        ("samples (frames)", summary["samples"]),
        ("labels CSV rows", summary["label_rows"]),
        ("label rows matching no file", summary["labels_without_file"]),
        ("hidden entries ignored", summary["ignored_hidden"]),
        ("cache hits / decoded", _decoding(cache)),
        ("files hashed / unchanged", _hashing(cache)),
        ("time", f"{summary['elapsed_s']:.1f} s"),
    ):
        overview.add_row(name, str(value))
    print_table(overview, console)
    if summary["rejected_by_reason"]:
        rejected = Table(
            "reason", "files", "what to do", title="Rejected files", title_justify="left"
        )
        for code, count in summary["rejected_by_reason"].items():
            rejected.add_row(code, str(count), _advice(code))
        print_table(rejected, console)
    for title, key in (
        *([("Samples by label", "samples_by_label")] if by_label else []),
        ("Image sizes", "image_sizes"),
        ("Modality", "modality"),
        ("Manufacturer", "manufacturer"),
        ("Transfer syntax", "transfersyntax"),
        ("File format", "format"),
    ):
        print_counts(console, title, summary[key])


def print_counts(console: Console, title: str, counts: dict[str, int], limit: int = 10) -> None:
    if not counts:
        return
    table = Table("value", "count", title=title, title_justify="left")
    for value, count in list(counts.items())[:limit]:
        table.add_row(value, str(count))
    if len(counts) > limit:
        table.add_row(f"… {len(counts) - limit} more", "")
    print_table(table, console)


def _advice(code: str) -> str:
    from fedscan.common.ingest import Reason

    return Reason(code).advice
