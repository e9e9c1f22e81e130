"""What a site's evaluations release, by its ``[privacy] metrics`` policy; the DP ones through the
ledger first.

- ``dp``: each evaluation of a model is one Gaussian-mechanism release of its coarse histogram and
  clipped loss sum (:mod:`fedscan.common.metrics.private`), at a noise calibrated once per run so
  that the planned releases — the per-round evaluations, the final one, the cross-site one when
  the run has it — spend the site's metric budget. Before each release the run's metric ε with it
  (and with the final and cross-site releases still to come, which are reserved) is checked; a
  per-round release that would overspend is withheld, and from then on the run releases its final
  evaluation only (``final-only``), with a logged notice: a degraded run, not a failed one.
- ``final-only``: the same mechanism for the final and cross-site evaluations; rounds withheld.
- ``coarse``: exact coarse histograms (26 bins) and the site's figures: outside any guarantee.
- ``none``: every evaluation withheld (a record saying so, and the count 0).

Invariants: a DP release is committed to the ledger with the exact values released before it is
returned to be sent; asked again (same run, kind, round, models) it is re-sent from the ledger.
No DP release is made while the site's δ is not below 1/(validation images): the evaluation is
withheld with a logged notice, as training refuses δ ≥ 1/(training images).
Under ``dp`` and ``final-only`` every kind of evaluation has its DP release: a binary histogram,
per-class evidence, one structure's overlap counts, a label map's per-structure counts
(:mod:`fedscan.common.metrics.private_tasks`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedscan.client.metric_forms import (
    Scored,
    coarse_form,
    from_stored,
    noisy,
    releasable,
    stored_form,
    withheld,
)
from fedscan.client.metric_ledger import MetricLedger, MetricRelease, MetricRun
from fedscan.client.requests import SiteRequest
from fedscan.client.site import Site
from fedscan.client.site_config import PrivacyPolicy
from fedscan.common import protocol
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.privacy import metric_noise

log = logging.getLogger(__name__)

ROUND, FINAL, CROSS_SITE = "round", "final", "cross"  # kinds of metric release
DEGRADED = "final-only"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MetricAsk:
    """One evaluation the coordinator asked for: whose run, which kind, of which aggregate."""

    run_id: str
    kind: str  # ROUND | FINAL | CROSS_SITE
    step: int  # the round whose aggregate is evaluated
    rounds: int
    cross_site: bool
    threshold: float
    models: str  # a digest of the models evaluated: another model is another release
    pixels: int = 1  # per validation image: the unit of a segmentation's overlap counts


def models_digest(arrays: Mapping[str, Any]) -> str:
    """A digest of the evaluated models' arrays (torch tensors or NumPy arrays)."""
    digest = hashlib.blake2b(digest_size=12)
    for name in sorted(arrays):
        digest.update(name.encode())
        for key, value in sorted(arrays[name].items()):
            digest.update(key.encode())
            digest.update(
                value.detach().cpu().numpy().tobytes()
                if hasattr(value, "detach")
                else value.tobytes()
            )
    return digest.hexdigest()


def release(
    policy: PrivacyPolicy, state_dir: Path, ask: MetricAsk, results: dict[str, Scored]
) -> tuple[dict[str, Scored], str]:
    """(what to send for each model, the policy applied to this reply)."""
    if policy.metrics == "coarse":
        coarse = {name: coarse_form(scored, ask.threshold) for name, scored in results.items()}
        return coarse, "coarse"
    if policy.metrics == "none":
        return withheld(results), "none"
    if not all(releasable(scored) for scored in results.values()):
        log.warning("An evaluation of a kind without a DP release is withheld.")
        return withheld(results), policy.metrics
    if policy.metrics == DEGRADED and ask.kind == ROUND:
        return withheld(results), DEGRADED
    images = _validation_images(results)
    if images and policy.delta >= 1.0 / images:
        log.warning(
            "This evaluation is withheld: the site's delta (%g) is not below 1/(validation "
            "images) = 1/%s, so a DP release could expose one image outright. Lower [privacy] "
            "delta in site.toml below %.2g.",
            policy.delta,
            images,
            1.0 / images,
        )
        return withheld(results), policy.metrics
    return _private(policy, MetricLedger(state_dir), ask, results)


def _validation_images(results: dict[str, Scored]) -> int:
    """The validation images behind the evaluations (all score the same images)."""
    counts = [
        int(found.positives.sum() + found.negatives.sum())
        if isinstance(found, ScoreHistogram)
        else int(metrics.get(protocol.NUM_EXAMPLES, 0))
        for metrics, found in results.values()
    ]
    return max(counts, default=0)


def _private(
    policy: PrivacyPolicy, ledger: MetricLedger, ask: MetricAsk, results: dict[str, Scored]
) -> tuple[dict[str, Scored], str]:
    key = f"{ask.kind}:{ask.step}:{ask.models}"
    stored = ledger.stored(ask.run_id, key)
    if stored is not None:
        log.info("Metric release %s of this run was already made; sending it again", key)
        return {name: from_stored(values) for name, values in stored.items()}, policy.metrics
    run = ledger.run(ask.run_id) or ledger.start_run(_calibrated(policy, ask))
    # The site's budget as it is now binds too: lowered during a run, it degrades the run.
    run = replace(run, target_epsilon=min(run.target_epsilon, policy.max_epsilon_metrics_per_run))
    applied = DEGRADED if ledger.degraded(ask.run_id) else run.policy
    noise = run.noise(ask.kind)
    if (ask.kind == ROUND and applied == DEGRADED) or noise <= 0:
        return withheld(results), applied
    entry = (noise, 1.0, 1)
    projected = ledger.epsilon(
        run.delta, run_id=ask.run_id, extra=[entry, *_reserved(ledger, run, ask)]
    )
    if projected > run.target_epsilon * (1 + _TOLERANCE):
        return _over_budget(ledger, ask, run, projected, results)
    spent = ledger.epsilon(run.delta, run_id=ask.run_id, extra=[entry])
    made = {
        name: noisy(scored, noise, len(results), spent, threshold=ask.threshold, pixels=ask.pixels)
        for name, scored in results.items()
    }
    stored = {name: stored_form(metrics, sent) for name, (metrics, sent) in made.items()}
    ledger.record(MetricRelease(ask.run_id, key, ask.kind, noise, run.delta), stored)
    return made, applied


def _calibrated(policy: PrivacyPolicy, ask: MetricAsk) -> MetricRun:
    """The run's metric noise: per-round evaluations (the aggregates of rounds 1 … R − 1), the
    final one and the cross-site one, as the run plans them, within the site's metric budget."""
    rounds = max(ask.rounds - 1, 0) if policy.metrics == "dp" else 0
    noise = metric_noise(
        epsilon=policy.max_epsilon_metrics_per_run,
        delta=policy.delta,
        rounds=rounds,
        final=True,
        cross_site=ask.cross_site,
    )
    log.info(
        "Metric releases of this run: noise multipliers %.3f (per round), %.3f (final), %.3f "
        "(cross-site) for epsilon=%s on the validation images",
        *noise,
        policy.max_epsilon_metrics_per_run,
    )
    return MetricRun(
        ask.run_id, policy.metrics, *noise, policy.max_epsilon_metrics_per_run, policy.delta
    )


def _reserved(
    ledger: MetricLedger, run: MetricRun, ask: MetricAsk
) -> list[tuple[float, float, int]]:
    """The planned final and cross-site releases not yet made (other than this one)."""
    made = {release.kind for release in ledger.releases(ask.run_id)}
    return [
        (run.noise(kind), 1.0, 1)
        for kind in (FINAL, CROSS_SITE)
        if kind != ask.kind and kind not in made and run.noise(kind) > 0
    ]


def _over_budget(
    ledger: MetricLedger,
    ask: MetricAsk,
    run: MetricRun,
    projected: float,
    results: dict[str, Scored],
) -> tuple[dict[str, Scored], str]:
    if ask.kind == ROUND and ledger.degrade(ask.run_id):
        log.warning(
            "This run's metric releases would bring the validation images' epsilon to %.3f, "
            "above the site's metric budget (%g): releasing the final evaluation only from now on "
            "(metrics = final-only). Training goes on.",
            projected,
            run.target_epsilon,
        )
    elif ask.kind != ROUND:
        log.warning(
            "The %s evaluation would bring the validation images' epsilon to %.3f, above the "
            "site's metric budget (%g); it is withheld.",
            ask.kind,
            projected,
            run.target_epsilon,
        )
    return withheld(results), DEGRADED


def for_request(
    site: Site,
    request: SiteRequest,
    kind: str,
    results: dict[str, Scored],
    models: Mapping[str, Mapping[str, Any]],
    *,
    pixels: int,
) -> tuple[dict[str, Scored], str]:
    """:func:`release` of one request's evaluations (``models``: the evaluated arrays by name;
    ``pixels``: per validation image)."""
    settings = request.settings
    step = request.server_round - 1 if kind == ROUND else request.server_round
    if kind == FINAL and request.server_round < settings.rounds:
        kind = ROUND  # an evaluate message mid-run (a plain Flower strategy): a round's release
    ask = MetricAsk(
        request.run_id,
        kind,
        step,
        settings.rounds,
        settings.cross_site,
        request.threshold if kind != ROUND or not request.evaluate_first else 0.5,
        models_digest(models),
        pixels,
    )
    return release(site.policy, site.state_dir, ask, results)
