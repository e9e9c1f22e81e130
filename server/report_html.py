"""The run report as one self-contained HTML page (images inline, opens offline): rendering only.

What the page says is decided in :mod:`fedscan.server.report` (the model card, the summary) and
:mod:`fedscan.server.report_segmentation`; here it is laid out and escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import Any

from fedscan.common.metrics.crosssite import CrossSiteMatrix
from fedscan.server import report_segmentation as segmentation
from fedscan.server.coverage import gaps_from_status
from fedscan.server.report_format import fmt as _fmt

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
    "text-align:right}th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:12px}"
    "img{border:1px solid #ddd}.note{color:#666;font-size:90%}"
    ".gaps{border:2px solid #c60;background:#fff4e5;padding:4px 14px}"
)


def render(
    run: dict[str, Any], figures: dict[str, bytes], card: str, summary: dict[str, Any]
) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in figures.items()
    )
    rounds = (
        _rounds_table(run["history"], segmentation.round_headers(run), segmentation.round_cells)
        if segmentation.is_segmentation(run)
        else _rounds_table(run["history"])
    )
    table = _sites_table(summary) + rounds + _cross_site_html(run["matrix"])
    card_html = _gaps_html(run["status"]) + "".join(
        _card_line(line)
        for line in card.splitlines()[1:]
        if line.strip() and not line.startswith("|") and not line.startswith(_GAP)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fedscan run "
        f"{html.escape(run['run_id'])}"
        f"</title><style>{_STYLE}</style></head><body><h1>fedscan run "
        f"{html.escape(run['run_id'])}</h1>"
        f"{card_html}<h2>Sites and rounds</h2>{table}<h2>Figures</h2><div "
        f"class='grid'>{images}</div>"
        "</body></html>"
    )


_GAP = "- Gap: "  # the model card's gap lines, shown in their own box instead


def _gaps_html(status: dict[str, Any]) -> str:
    """A box at the top of the page when the run completed with gaps: each phase that missed
    sites."""
    gaps = gaps_from_status(status)
    if not gaps:
        return ""
    items = "".join(f"<li>{html.escape(gap.sentence())}</li>" for gap in gaps)
    return (
        f"<div class='gaps'><h2>{html.escape(str(status.get('state')))}: the results below miss "
        f"sites</h2><ul>{items}</ul></div>"
    )


def _card_line(line: str) -> str:
    """One Markdown line of the model card as HTML (bullets and paragraphs only)."""
    text = html.escape(line.removeprefix("- ")).replace("`", "")
    return f"<li>{text}</li>" if line.startswith("- ") else f"<p>{text}</p>"


def _cross_site_html(document: dict[str, Any]) -> str:
    if not document:
        return ""
    matrix = CrossSiteMatrix.from_json(document)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in (*matrix.sites, "pooled"))
    rows = "".join(
        f"<tr><th>{html.escape(model)}</th>"
        + "".join(f"<td>{_fmt(v)}</td>" for v in row)
        + f"<td>{_fmt(matrix.pooled.get(model, {}).get('auc'))}</td></tr>"
        for model, row in zip(matrix.models, matrix.values("auc"), strict=True)
    )
    return (
        "<h3>Cross-site validation AUC (model × site)</h3>"
        f"<table><tr><th>model</th>{header}</tr>{rows}</table>"
    )


def _sites_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{summary['samples'][name][0]}</td>"
        f"<td>{summary['samples'][name][1]}</td><td>{_fmt(summary['epsilon'].get(name))}</td></tr>"
        for name in summary["sites"]
    )
    return (
        "<table><tr><th>site</th><th>training samples</th><th>validation samples</th><th>ε "
        "spent</th></tr>"
        f"{rows}</table>"
    )


def _classification_cells(pooled: dict[str, Any]) -> list[str]:
    return [
        _fmt(pooled.get("auc")),
        f"{_fmt(pooled.get('auc-ci-low'))}–{_fmt(pooled.get('auc-ci-high'))}",
        _fmt(pooled.get("ece")),
    ]


def _rounds_table(
    history: list[dict[str, Any]],
    headers: tuple[str, ...] = ("pooled AUC", "95 % CI", "ECE"),
    cells: Callable[[dict[str, Any]], list[str]] = _classification_cells,
) -> str:
    """One row per round: its pooled metrics (``cells`` of the pooled record) and the refusals."""
    header = (
        "<tr><th>round</th>"
        + "".join(f"<th>{name}</th>" for name in headers)
        + "<th>refusals</th></tr>"
    )
    rows = []
    for line in history:
        refusals = ", ".join(
            f"{r['site']}: {r['reason'].split(':')[0]}" for r in line.get("refusals", [])
        )
        rows.append(
            f"<tr><td>{line['round']}</td>"
            + "".join(f"<td>{cell}</td>" for cell in cells(line.get("pooled") or {}))
            + f"<td>{html.escape(refusals) or '—'}</td></tr>"
        )
    return f"<table>{header}{''.join(rows)}</table>"
