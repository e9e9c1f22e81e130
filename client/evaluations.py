"""The site's evaluate handlers: the run's final model, and the cross-site matrix's models.

Invariants: every figure leaves through :func:`fedscan.client.metric_release.for_request` (the
site's metric policy: exact, coarse or DP-noised, recorded before it is sent) and every reply is
built in :mod:`fedscan.client.replies`; the models are scored on the site's validation images only.
"""

from __future__ import annotations

import time

from flwr.app import Message

from fedscan.client import metric_release, replies, secure_aggregation
from fedscan.client.requests import SiteRequest
from fedscan.client.scoring import Scored, load_for, pixels_per_image, score
from fedscan.client.site import Site
from fedscan.common import protocol
from fedscan.common.device import resolve_device


def final_evaluation(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    """The run's final model on this site's validation data; the run's secure-aggregation keys are
    dropped first, as its rounds are over."""
    started = time.monotonic()
    secure_aggregation.forget(site.state_dir, request.run_id)  # the run's rounds are over
    val = load_for(site, request.settings.train).val
    arrays = msg.content.array_records[protocol.ARRAYS]
    scored = score(
        request.model,
        arrays,
        val,
        device=resolve_device(device or site.device),
        threshold=request.threshold,
        scheme=request.scheme,
    )
    released, policy = metric_release.for_request(
        site,
        request,
        metric_release.FINAL,
        {protocol.GLOBAL_MODEL: scored},
        {"": arrays.to_torch_state_dict()},
        pixels=pixels_per_image(val),
    )
    metrics, histogram = released[protocol.GLOBAL_MODEL]
    metrics[protocol.SITE_SECONDS] = time.monotonic() - started
    return replies.evaluate_reply(
        msg, metrics, site.name, histogram=histogram, metrics_policy=policy
    )


def cross_site_evaluation(
    msg: Message, request: SiteRequest, site: Site, device: str | None
) -> Message:
    """Every model in the message (global, each site's local one) on this site's validation data."""
    val = load_for(site, request.settings.train).val
    on = resolve_device(device or site.device)
    scheme = request.scheme
    records = msg.content.array_records
    results: dict[str, Scored] = {
        name: score(
            request.model, arrays, val, device=on, threshold=request.threshold, scheme=scheme
        )
        for name, arrays in records.items()
    }
    models = {name: arrays.to_torch_state_dict() for name, arrays in records.items()}
    released, policy = metric_release.for_request(
        site, request, metric_release.CROSS_SITE, results, models, pixels=pixels_per_image(val)
    )
    return replies.cross_site_reply(msg, released, site.name, metrics_policy=policy)
