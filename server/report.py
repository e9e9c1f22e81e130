"""The run report: ``report.html`` (one self-contained file, images inline, opens offline) and
``model_card.md``, rebuilt from the run directory alone (``fedscan report RUN_DIR``).

A run that completed with gaps says so at the top of both: its state and one line per gap (the
phase, the sites it missed and why, the sites whose DP release went into a lost result)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from fedscan import __version__
from fedscan.common.config import update_bound
from fedscan.common.errors import DataError
from fedscan.common.files import atomic_write_bytes
from fedscan.common.metrics.crosssite import CrossSiteMatrix, metric_epsilon
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.models.weight_match import WeightMatch
from fedscan.common.protocol import NUM_EXAMPLES
from fedscan.server import report_classes, report_html, site_audits
from fedscan.server import report_segmentation as segmentation
from fedscan.server.coverage import gaps_from_status
from fedscan.server.report_format import fmt as _fmt
from fedscan.server.rundir import (
    CONFIG_FILE,
    FINAL_MODEL,
    HISTOGRAMS_FILE,
    INIT_WEIGHTS_FILE,
    MATRIX_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    REPORT_FILE,
    STATUS_FILE,
    RunDirectory,
)


def _read(run_dir: Path) -> dict[str, Any]:
    directory = RunDirectory(run_dir, run_dir.name)
    if not directory.file(METRICS_FILE).is_file():
        raise DataError(f"{run_dir} holds no {METRICS_FILE}: is it a fedscan run directory?")
    history = [
        line for line in directory.read_metrics() if "aggregated" in line
    ]  # rounds that completed
    return {
        "history": history,
        "config": directory.read_json(CONFIG_FILE),
        "status": directory.read_json(STATUS_FILE),
        "histograms": directory.read_json(HISTOGRAMS_FILE),
        "final": directory.read_json(f"{FINAL_MODEL}.json"),
        "run_id": run_dir.name,
        "matrix": directory.read_json(MATRIX_FILE),
        "init": directory.read_json(INIT_WEIGHTS_FILE),
        "site_audits": site_audits.attached(run_dir),
    }


def build_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.html and model_card.md into ``run_dir``; return their paths."""
    from fedscan.common.metrics import plots  # matplotlib only when a report is made

    run_dir = Path(run_dir)
    run = _read(run_dir)
    if not run["history"]:
        raise DataError("The run completed no round; there is nothing to report.")
    delta = float(run["config"].get("privacy", {}).get("delta", math.nan))
    metric, name = ("dice", "Dice") if segmentation.is_segmentation(run) else ("auc", "AUC")
    figures = {
        f"{name} per round": plots.per_round(
            run["history"],
            metric=metric,
            title=f"Validation {name} per round",
            pooled=any("pooled" in line for line in run["history"]),
        ),
        "Loss per round": plots.per_round(
            run["history"], metric="loss", title="Validation loss per round", pooled=False
        ),
        "ε per site": plots.epsilon_per_round(run["history"], delta),
    }
    if report_classes.is_per_class(run):
        figures.update(report_classes.figures(run))
    elif run["histograms"]:
        pooled = ScoreHistogram.from_lists(run["histograms"]["pooled"])
        sites = {
            name: ScoreHistogram.from_lists(h) for name, h in run["histograms"]["sites"].items()
        }
        figures["ROC"] = plots.roc(pooled, sites, float(run["histograms"]["threshold"]))
        figures["Reliability"] = plots.reliability(pooled)
    if run["matrix"]:
        matrix = CrossSiteMatrix.from_json(run["matrix"])
        figures["Cross-site AUC"] = plots.cross_site_heatmap(
            list(matrix.models),
            list(matrix.sites),
            matrix.values("auc"),
            [matrix.pooled.get(model, {}).get("auc") for model in matrix.models],
        )
    card = model_card(run)
    report, card_path = run_dir / REPORT_FILE, run_dir / MODEL_CARD_FILE
    atomic_write_bytes(report, report_html.render(run, figures, card, _summary(run)).encode())
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
    return {
        "last": last,
        "sites": sites,
        "pooled": last.get("pooled") or {},
        "samples": {
            s: (train.get(s, {}).get(NUM_EXAMPLES), evaluate.get(s, {}).get(NUM_EXAMPLES))
            for s in sites
        },
        "epsilon": {**last.get("epsilon", {}), **run["matrix"].get("epsilon", {})},
        "metrics_policy": last.get("metrics_policy", {}),
        "metrics_epsilon": {
            **last.get("metrics_epsilon", {}),
            **metric_epsilon(run["matrix"]),  # the cross-site release, after the final one
        },
        "config_hash": hashlib.sha256(
            json.dumps(run["config"], sort_keys=True).encode()
        ).hexdigest()[:16],
    }


def model_card(run: dict[str, Any]) -> str:
    """A short, factual model card in Markdown."""
    s, config = _summary(run), run["config"]
    privacy, train = config.get("privacy", {}), config.get("train", {})
    p = s["pooled"]
    lines = [
        f"# Model card — run {run['run_id']}",
        "",
        f"- Model: `{train.get('model', '?')}`; fedscan "
        f"{config.get('fedscan_version', __version__)}; "
        f"config hash `{s['config_hash']}`",
        _start_line(run),
        f"- Rounds: {s['last']['round']} of {config.get('rounds', '?')} "
        f"({config.get('strategy', '?')}); "
        f"status: {run['status'].get('state', 'unknown')}",
        *_gap_lines(run["status"]),
        f"- Privacy: DP-SGD at each site, target ε = {privacy.get('epsilon')}, δ = "
        f"{privacy.get('delta')}, "
        f"clipping norm {privacy.get('clip_norm')}"
        + ("" if privacy.get("enabled", True) else " — DP OFF"),
        *_aggregation_lines(run),
        *_threshold_line(run),
        "| site | training samples | validation samples | ε training (δ = {}) | metric "
        "releases: policy, ε on validation images |".format(privacy.get("delta")),
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['samples'][name][0]} | {s['samples'][name][1]} | "
        f"{_fmt(s['epsilon'].get(name))} | {_metric_cell(s, name)} |"
        for name in s["sites"]
    ]
    lines += ["", _COUNTS_NOTE, "", *site_audits.card_lines(run.get("site_audits", []))]
    if segmentation.is_segmentation(run):
        return "\n".join([*lines, "", *segmentation.card_lines(run), _LIMITS]) + "\n"
    if report_classes.is_per_class(run):
        return "\n".join([*lines, "", *report_classes.card_lines(run), _LIMITS]) + "\n"
    lines += [
        "",
        "Pooled validation metrics (from summed score histograms):",
        "",
        f"- AUC {_fmt(p.get('auc'))} (95 % CI "
        f"{_fmt(p.get('auc-ci-low'))}–{_fmt(p.get('auc-ci-high'))}, "
        + (
            "Hanley–McNeil widened for the sites' metric noise, σ "
            f"{_fmt(p.get('noise-std'))} per count)"
            if p.get("noise-std")
            else "Hanley–McNeil)"
        ),
        f"- at threshold {_fmt(p.get('threshold'))}: sensitivity {_fmt(p.get('sensitivity'))}, "
        "specificity "
        f"{_fmt(p.get('specificity'))}, F1 {_fmt(p.get('f1'))}, accuracy {_fmt(p.get('accuracy'))}",
        f"- expected calibration error {_fmt(p.get('ece'))} (10 bins); after the stored Platt "
        f"recalibration {_fmt(p.get('ece-calibrated'))} (fitted on this same validation data; "
        f"a perfectly calibrated model would show {_fmt(p.get('ece-floor'))} on this many "
        f"images); n = {_fmt(p.get('n'), 0)}",
        "",
        *_cross_site_markdown(run["matrix"]),
        _LIMITS,
    ]
    return "\n".join(lines) + "\n"


_COUNTS_NOTE = (
    "Sample counts and metrics come from what each site released under its `[privacy] metrics` "
    "policy: under `dp` and `final-only` they are noised (the training count once per run, in its "
    "training budget; each evaluation in its metric budget), under `none` withheld, under `coarse` "
    "exact and outside any guarantee."
)


def _metric_cell(summary: dict[str, Any], site: str) -> str:
    policy = summary["metrics_policy"].get(site)
    if policy is None:
        return "not stated (an older fedscan site)"
    spent = summary["metrics_epsilon"].get(site)
    return f"{policy}, ε {_fmt(spent)}" if spent is not None else str(policy)


_LIMITS = (
    "Limits: validation data comes from the same sites as training (and a classifier's threshold "
    "is "
    "chosen on it), so these metrics are optimistic. Evaluate at each hospital with `fedscan "
    "evaluate`."
)


def _aggregation_lines(run: dict[str, Any]) -> list[str]:
    """Secure aggregation (sites summed per round, the clip bound) and central DP, when used."""
    config, lines = run["config"], []
    central = float(config.get("central_noise_multiplier") or 0.0)
    clip = config.get("central_clip_norm")
    if config.get("secure_aggregation"):
        summed = [
            str(line["secure_aggregation"]["summed"])
            for line in run["history"]
            if "secure_aggregation" in line
        ]
        bound = f"{update_bound(central, float(clip or 0.0)):g}" + (
            " (central DP's C)" if central > 0 else ""
        )
        lines.append(
            "- Secure aggregation: the coordinator saw only the sum of the sites' updates "
            f"(sites summed per round: {', '.join(summed) or 'none'}), each clipped by its own "
            f"site to L2 ≤ {bound}"
        )
    if central > 0:
        epsilon = next(
            (
                line["central_epsilon"]
                for line in reversed(run["history"])
                if "central_epsilon" in line
            ),
            None,
        )
        lines.append(
            f"- Central DP on the aggregate: σ = {central:g}, C = {clip}, ε = {_fmt(epsilon)} "
            f"(δ = {config.get('central_delta')}, site-level)"
        )
    return lines


def _start_line(run: dict[str, Any]) -> str:
    """Where round 1 began: the seed's random weights, or the starting weights' file, SHA-256 and
    what they gave the model."""
    config = run["config"]
    digest = config.get("init_weights_sha256")
    if not digest:
        return f"- Starting weights: random (seed {config.get('seed', '?')})"
    if not run.get("init"):  # the run failed before it loaded them
        return (
            f"- Starting weights: `{Path(config.get('init_weights', '')).name}`, SHA-256 `{digest}`"
        )
    return f"- Starting weights: {WeightMatch.from_json(run['init']).summary()}"


def _gap_lines(status: dict[str, Any]) -> list[str]:
    """The phases that missed sites (a ``completed-with-gaps`` run): what the results below lack,
    and which sites spent a DP release on a lost result."""
    return [f"- Gap: {gap.sentence()}" for gap in gaps_from_status(status)]


def _threshold_line(run: dict[str, Any]) -> list[str]:
    if segmentation.is_segmentation(run):
        return [
            "- Task: segmentation (one finding mask per image, DiceCE loss); pixel threshold 0.5",
            "",
        ]
    if report_classes.is_per_class(run):
        return [*report_classes.task_lines(run), ""]
    return [
        f"- Operating threshold: {_fmt(run['final'].get('threshold'))} "
        f"({run['config'].get('operating_point', 'youden')}, pooled validation)",
        "",
    ]


def _cross_site_markdown(document: dict[str, Any]) -> list[str]:
    """The cross-site AUC matrix as a Markdown table (empty when the run made none)."""
    if not document:
        return ["Cross-site validation: not run (cross-site = false).", ""]
    matrix = CrossSiteMatrix.from_json(document)
    lines = [
        "Cross-site validation — AUC of each model (rows) at each site (columns); local models are "
        "the final global model fine-tuned once more at that site, under its DP budget:",
        "",
        "| model | " + " | ".join(matrix.sites) + " | pooled |",
        "|---" * (len(matrix.sites) + 2) + "|",
    ]
    for model, row in zip(matrix.models, matrix.values("auc"), strict=True):
        pooled = matrix.pooled.get(model, {}).get("auc")
        lines.append(f"| {model} | " + " | ".join(_fmt(v) for v in row) + f" | {_fmt(pooled)} |")
    return lines + [""] + [f"- {note}" for note in matrix.notes] + ([""] if matrix.notes else [])
