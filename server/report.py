"""The run report: ``report.html`` (one self-contained file, images inline, opens offline) and
``model_card.md``, rebuilt from the run directory alone (``fedscan report RUN_DIR``)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedscan import __version__
from fedscan.common.checkpoint import atomic_write_bytes
from fedscan.common.crosssite import MATRIX_FILE, CrossSiteMatrix
from fedscan.common.errors import DataError
from fedscan.common.pooled import ScoreHistogram
from fedscan.server import report_segmentation as segmentation
from fedscan.server.rundir import RunDirectory

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
          "text-align:right}th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:12px}"
          "img{border:1px solid #ddd}.note{color:#666;font-size:90%}")


def _read(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / "metrics.jsonl").is_file():
        raise DataError(f"{run_dir} holds no metrics.jsonl: is it a fedscan run directory?")
    lines = RunDirectory(run_dir, run_dir.name).read_metrics()
    history = [line for line in lines if "aggregated" in line]  # rounds that completed

    def load(name: str) -> dict[str, Any]:
        return json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else {}

    return {"history": history, "config": load("config.json"), "status": load("status.json"),
            "histograms": load("histograms.json"), "final": load("final.json"), "run_id": run_dir.name,
            "cross_site": load(MATRIX_FILE)}


def build_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.html and model_card.md into ``run_dir``; return their paths."""
    from fedscan.server import plots  # matplotlib only when a report is made

    run_dir = Path(run_dir)
    run = _read(run_dir)
    if not run["history"]:
        raise DataError("The run completed no round; there is nothing to report.")
    delta = float(run["config"].get("privacy", {}).get("delta", math.nan))
    metric, name = ("dice", "Dice") if segmentation.is_segmentation(run) else ("auc", "AUC")
    figures = {
        f"{name} per round": plots.per_round(run["history"], metric=metric, title=f"Validation {name} per round",
                                             pooled=any("pooled" in line for line in run["history"])),
        "Loss per round": plots.per_round(run["history"], metric="loss", title="Validation loss per round",
                                          pooled=False),
        "ε per site": plots.epsilon_per_round(run["history"], delta),
    }
    if run["histograms"]:
        pooled = ScoreHistogram.from_lists(run["histograms"]["pooled"])
        sites = {name: ScoreHistogram.from_lists(h) for name, h in run["histograms"]["sites"].items()}
        figures["ROC"] = plots.roc(pooled, sites, float(run["histograms"]["threshold"]))
        figures["Reliability"] = plots.reliability(pooled)
    if run["cross_site"]:
        matrix = CrossSiteMatrix.from_json(run["cross_site"])
        figures["Cross-site AUC"] = plots.cross_site_heatmap(
            list(matrix.models), list(matrix.sites), matrix.values("auc"),
            [matrix.pooled.get(model, {}).get("auc") for model in matrix.models])
    card = model_card(run)
    report, card_path = run_dir / "report.html", run_dir / "model_card.md"
    atomic_write_bytes(report, _html(run, figures, card).encode())
    atomic_write_bytes(card_path, card.encode())
    return report, card_path


def rebuild_events(run_dir: Path) -> Path:
    """TensorBoard event files for every completed round of the run (replacing earlier ones)."""
    from fedscan.server.tensorboard import rebuild

    return rebuild(Path(run_dir), _read(Path(run_dir))["history"])


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    last = run["history"][-1]
    train, evaluate = last.get("train", {}), last.get("evaluate", {})
    sites = sorted(set(train) | set(evaluate))
    return {"last": last, "sites": sites, "pooled": last.get("pooled") or {},
            "samples": {s: (train.get(s, {}).get("num-examples"), evaluate.get(s, {}).get("num-examples"))
                        for s in sites},
            "epsilon": {**last.get("epsilon", {}), **run["cross_site"].get("epsilon", {})}, "config_hash": hashlib.sha256(
                json.dumps(run["config"], sort_keys=True).encode()).hexdigest()[:16]}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(run: dict[str, Any]) -> str:
    """A short, factual model card in Markdown."""
    s, config = _summary(run), run["config"]
    privacy, train = config.get("privacy", {}), config.get("train", {})
    p = s["pooled"]
    lines = [f"# Model card — run {run['run_id']}", "",
             f"- Model: `{train.get('model', '?')}`; fedscan {config.get('fedscan_version', __version__)}; "
             f"config hash `{s['config_hash']}`",
             f"- Rounds: {s['last']['round']} of {config.get('rounds', '?')} ({config.get('strategy', '?')}); "
             f"status: {run['status'].get('state', 'unknown')}",
             f"- Privacy: DP-SGD at each site, target ε = {privacy.get('epsilon')}, δ = {privacy.get('delta')}, "
             f"clipping norm {privacy.get('clip_norm')}" + ("" if privacy.get("enabled", True) else " — DP OFF"),
             *_threshold_line(run),
             "| site | training samples | validation samples | ε spent (δ = {}) |".format(privacy.get("delta")),
             "|---|---|---|---|"]
    lines += [f"| {name} | {s['samples'][name][0]} | {s['samples'][name][1]} | {_fmt(s['epsilon'].get(name))} |"
              for name in s["sites"]]
    if segmentation.is_segmentation(run):
        return "\n".join([*lines, "", *segmentation.card_lines(run), _LIMITS]) + "\n"
    lines += ["", "Pooled validation metrics (from summed score histograms):", "",
              f"- AUC {_fmt(p.get('auc'))} (95 % CI {_fmt(p.get('auc-ci-low'))}–{_fmt(p.get('auc-ci-high'))}, "
              "Hanley–McNeil)",
              f"- at threshold {_fmt(p.get('threshold'))}: sensitivity {_fmt(p.get('sensitivity'))}, specificity "
              f"{_fmt(p.get('specificity'))}, F1 {_fmt(p.get('f1'))}, accuracy {_fmt(p.get('accuracy'))}",
              f"- expected calibration error {_fmt(p.get('ece'))} (10 bins); n = {_fmt(p.get('n'), 0)}", "",
              *_cross_site_markdown(run["cross_site"]), _LIMITS]
    return "\n".join(lines) + "\n"


_LIMITS = ("Limits: validation data comes from the same sites as training (and a classifier's threshold is "
           "chosen on it), so these metrics are optimistic. Evaluate at each hospital with `fedscan evaluate`.")


def _threshold_line(run: dict[str, Any]) -> list[str]:
    if segmentation.is_segmentation(run):
        return ["- Task: segmentation (one finding mask per image, DiceCE loss); pixel threshold 0.5", ""]
    return [f"- Operating threshold: {_fmt(run['final'].get('threshold'))} (Youden, pooled validation)", ""]


def _cross_site_markdown(document: dict[str, Any]) -> list[str]:
    """The cross-site AUC matrix as a Markdown table (empty when the run made none)."""
    if not document:
        return ["Cross-site validation: not run (cross-site = false).", ""]
    matrix = CrossSiteMatrix.from_json(document)
    lines = ["Cross-site validation — AUC of each model (rows) at each site (columns); local models are "
             "the final global model fine-tuned once more at that site, under its DP budget:", "",
             "| model | " + " | ".join(matrix.sites) + " | pooled |", "|---" * (len(matrix.sites) + 2) + "|"]
    for model, row in zip(matrix.models, matrix.values("auc")):
        pooled = matrix.pooled.get(model, {}).get("auc")
        lines.append(f"| {model} | " + " | ".join(_fmt(v) for v in row) + f" | {_fmt(pooled)} |")
    return lines + [""] + [f"- {note}" for note in matrix.notes] + ([""] if matrix.notes else [])


def _html(run: dict[str, Any], figures: dict[str, bytes], card: str) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>" for title, png in figures.items())
    rounds = (_rounds_table(run["history"], segmentation.ROUND_HEADERS, segmentation.round_cells)
              if segmentation.is_segmentation(run) else _rounds_table(run["history"]))
    table = _sites_table(_summary(run)) + rounds + _cross_site_html(run["cross_site"])
    card_html = "".join(_card_line(line) for line in card.splitlines()[1:] if line.strip()
                        and not line.startswith("|"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fedscan run {html.escape(run['run_id'])}"
            f"</title><style>{_STYLE}</style></head><body><h1>fedscan run {html.escape(run['run_id'])}</h1>"
            f"{card_html}<h2>Sites and rounds</h2>{table}<h2>Figures</h2><div class='grid'>{images}</div>"
            "</body></html>")


def _card_line(line: str) -> str:
    """One Markdown line of the model card as HTML (bullets and paragraphs only)."""
    text = html.escape(line.removeprefix("- ")).replace("`", "")
    return f"<li>{text}</li>" if line.startswith("- ") else f"<p>{text}</p>"


def _cross_site_html(document: dict[str, Any]) -> str:
    if not document:
        return ""
    matrix = CrossSiteMatrix.from_json(document)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in (*matrix.sites, "pooled"))
    rows = "".join(f"<tr><th>{html.escape(model)}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in row)
                   + f"<td>{_fmt(matrix.pooled.get(model, {}).get('auc'))}</td></tr>"
                   for model, row in zip(matrix.models, matrix.values("auc")))
    return f"<h3>Cross-site validation AUC (model × site)</h3><table><tr><th>model</th>{header}</tr>{rows}</table>"


def _sites_table(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{summary['samples'][name][0]}</td>"
                   f"<td>{summary['samples'][name][1]}</td><td>{_fmt(summary['epsilon'].get(name))}</td></tr>"
                   for name in summary["sites"])
    return ("<table><tr><th>site</th><th>training samples</th><th>validation samples</th><th>ε spent</th></tr>"
            f"{rows}</table>")


def _classification_cells(pooled: dict[str, Any]) -> list[str]:
    return [_fmt(pooled.get("auc")), f"{_fmt(pooled.get('auc-ci-low'))}–{_fmt(pooled.get('auc-ci-high'))}",
            _fmt(pooled.get("ece"))]


def _rounds_table(history: list[dict[str, Any]], headers: tuple[str, ...] = ("pooled AUC", "95 % CI", "ECE"),
                  cells: Callable[[dict[str, Any]], list[str]] = _classification_cells) -> str:
    """One row per round: its pooled metrics (``cells`` of the pooled record) and the refusals."""
    header = "<tr><th>round</th>" + "".join(f"<th>{name}</th>" for name in headers) + "<th>refusals</th></tr>"
    rows = []
    for line in history:
        refusals = ", ".join(f"{r['site']}: {r['reason'].split(':')[0]}" for r in line.get("refusals", []))
        rows.append(f"<tr><td>{line['round']}</td>" + "".join(f"<td>{cell}</td>" for cell in
                                                              cells(line.get("pooled") or {}))
                    + f"<td>{html.escape(refusals) or '—'}</td></tr>")
    return f"<table>{header}{''.join(rows)}</table>"
