"""The index page a hospital reviews its maps from: one self-contained HTML file.

Invariants: every text that comes from data (file keys, class names) is HTML-escaped; the page
loads nothing from outside — no script, no stylesheet or font from a server; images are the
overlays beside it, by relative path — and a Content-Security-Policy forbids anything else. Rows
come in :func:`~fedscan.common.explain.records.review_order`: false positives, then false
negatives, then the rest, highest score first within each.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from fedscan.common.explain.records import ImageExplanation, review_order

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; border-bottom: 1px solid #ddd; }
tr.FP td.flag { color: #b00; font-weight: bold; } tr.FN td.flag { color: #a60; font-weight: bold; }
img { width: 420px; image-rendering: auto; }
"""
_POLICY = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"


def index_html(
    records: Sequence[ImageExplanation], overlays: dict[str, str], *, title: str, summary: str
) -> str:
    """The page: ``overlays`` maps a record's key to its PNG's path relative to the page."""
    rows = "\n".join(_row(rank, record, overlays) for rank, record in enumerate(
        review_order(records), start=1
    ))  # fmt: skip
    errors = sum(1 for record in records if record.errors)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(_POLICY)}">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body><h1>{escape(title)}</h1>
<p>{escape(summary)}</p>
<p>{len(records)} images; {errors} misclassified at the model's threshold, listed first (false
positives, then false negatives), then the rest by score. For this hospital's own review: these
maps never leave the site. Not for diagnosis.</p>
<table><thead><tr><th>#</th><th>error</th><th>image</th><th>truth</th><th>predicted</th>
<th>score</th><th>maps</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


def _row(rank: int, record: ImageExplanation, overlays: dict[str, str]) -> str:
    flag = " ".join(record.errors)
    picture = overlays.get(record.key)
    cell = (
        f'<a href="{escape(picture)}"><img src="{escape(picture)}" alt="maps of '
        f'{escape(record.key)}" loading="lazy"></a>'
        if picture
        else ""
    )
    return (
        f'<tr class="{escape(flag.split(" ")[0] if flag else "ok")}"><td>{rank}</td>'
        f'<td class="flag">{escape(flag)}</td><td>{escape(record.key)}</td>'
        f"<td>{escape(', '.join(record.truth) or 'no finding')}</td>"
        f"<td>{escape(', '.join(record.predicted) or 'no finding')}</td>"
        f"<td>{record.score:.3f}</td><td>{cell}</td></tr>"
    )
