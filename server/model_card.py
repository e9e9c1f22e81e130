"""``model_card.md``: a short, factual card of a run, from its run directory's records alone —
the model and config hash, where its weights started, rounds and state (each gap named), privacy
per site (training ε and each site's metric-release policy), aggregation, and the pooled validation
figures of its task (with their intervals), then the limits of those figures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fedscan import __version__
from fedscan.common.config import update_bound
from fedscan.common.metrics.crosssite import CrossSiteMatrix, metric_epsilon
from fedscan.common.models.weight_match import WeightMatch
from fedscan.common.protocol import NUM_EXAMPLES
from fedscan.server import report_classes, site_audits
from fedscan.server import report_segmentation as segmentation
from fedscan.server.coverage import gaps_from_status
from fedscan.server.report_format import fmt as _fmt


def summary(run: dict[str, Any]) -> dict[str, Any]:
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
    s, config = summary(run), run["config"]
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
