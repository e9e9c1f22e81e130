"""The hospital's Flower ClientApp: train, evaluate, cross-site and feature-statistics handlers.

Data never leaves: handlers load the site's images locally, and every reply
is built (and checked against an allow-list) in :mod:`fedscan.client.replies`.
Every DP release goes through :func:`fedscan.client.releases.release_once`,
which commits it to the site's privacy ledger before it is sent (under secure aggregation it
leaves later, masked: :mod:`fedscan.client.secure_aggregation`). Each message
is parsed once into a :class:`~fedscan.client.requests.SiteRequest` (the
coordinator's version checked first); the coordinator sends settings, never code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedscan import wire
from fedscan.client import (
    audit,
    counts,
    evaluations,
    metric_release,
    replies,
    secure_aggregation,
)
from fedscan.client.requests import SiteRequest
from fedscan.client.scoring import load_for, pixels_per_image, score
from fedscan.client.site import Site, SiteResolver, resolve_site
from fedscan.common import protocol
from fedscan.common.data.imageset import SiteData
from fedscan.common.device import resolve_device
from fedscan.common.errors import FedscanError, ModelError
from fedscan.common.logs import log_to_stderr
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.trainable import update_names
from fedscan.common.privacy import HistoryEntry, planned_releases
from fedscan.common.tasks import outputs

log = logging.getLogger(__name__)

Handler = Callable[[Message, SiteRequest, Site, str | None], Message]


def make_client_app(
    resolve: SiteResolver = resolve_site, *, device: str | None = None
) -> ClientApp:
    """A ClientApp serving the site that ``resolve(context)`` describes."""
    log_to_stderr()  # the site's console; claims the root logger before Opacus is imported
    app = ClientApp()

    def serve(handler: Handler) -> Callable[[Message, Context], Message]:
        def handle(msg: Message, context: Context) -> Message:
            packed = msg.has_content() and wire.is_packed(msg.content)
            audited: list[tuple[Site, bool]] = []  # the site, and whether this is a replay

            def run() -> Message:
                site = resolve(context)  # audited first: a request whose packing is bad too
                audited.append((site, audit.record_request(site.state_dir, msg)))
                if packed:
                    _unpack(msg)
                request = SiteRequest.parse(msg)
                _allowed(site, request, msg)
                return handler(msg, request, site, device)

            reply = _guarded(msg, run)
            if audited:
                reply = _guarded(msg, lambda: _audited(audited[0], msg, reply))
            if packed and reply.has_content():  # answered the way it came (fedscan.wire)
                reply.content = wire.pack(reply.content)
            return reply

        return handle

    app.train()(serve(_train))
    app.evaluate()(serve(evaluations.final_evaluation))
    app.evaluate(protocol.CROSS_SITE_ACTION)(serve(evaluations.cross_site_evaluation))
    app.query(protocol.STATS_ACTION)(serve(_feature_stats))
    for action, step in secure_aggregation.HANDLERS.items():  # the round's extra exchanges
        app.train(action)(serve(step))
    return app


def _allowed(site: Site, request: SiteRequest, msg: Message) -> None:
    """The site's [policy], then its approval of the run (refusals are coded FedscanErrors)."""
    policy = site.run_policy
    policy.check(request.settings, request.coordinator_version)
    if policy.require_approval:
        from fedscan.client.approvals import Approvals

        Approvals(site.state_dir).check(
            request.run_id,
            request.settings,
            request.coordinator_version,
            sent=dict(msg.content.config_records[protocol.CONFIG]),
            auto=policy.auto_approve,
        )


def _audited(audited: tuple[Site, bool], msg: Message, reply: Message) -> Message:
    """``reply`` once the site's audit log holds it (a reply that cannot be audited is not sent;
    a release it carries stays in the ledger and is sent again when the round is asked again)."""
    site, replay = audited
    audit.record_reply(site.state_dir, msg, reply, replay=replay)
    return reply


def _unpack(msg: Message) -> None:
    try:
        msg.content = wire.unpack(msg.content)
    except (ValueError, KeyError, TypeError) as error:
        raise ModelError(f"the request's packed arrays do not unpack: {error}") from error


def _guarded(msg: Message, handler: Callable[[], Message]) -> Message:
    """Turn every failure into a coded reply; the failure's own text stays in the site's log."""
    try:
        return handler()
    except FedscanError as error:
        log.warning("Refusing the request (%s): %s", error.code, error)
        return replies.error_reply(msg, error.code)
    except Exception:  # its text may hold paths or data: logged here, never sent
        log.exception("Local failure while handling a %s request", msg.metadata.message_type)
        return replies.error_reply(msg, FedscanError.code)


def _feature_stats(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    from fedscan.client.feature_stats import feature_stats

    return feature_stats(msg, request, site)


def _train(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    started = time.monotonic()
    sent = msg.content.array_records[protocol.ARRAYS]
    received = sent.to_torch_state_dict()
    data = load_for(site, request.settings.train)
    on = resolve_device(device or site.device)
    # The previous round's aggregate (the model just received), scored before training on it when
    # the coordinator asks: it saves a separate evaluate exchange per round.
    evaluation, policy = None, ""
    if request.evaluate_first:
        scored = score(
            request.model, sent, data.val, threshold=0.5, device=on, scheme=request.scheme
        )
        released, policy = metric_release.for_request(
            site,
            request,
            metric_release.ROUND,
            {protocol.GLOBAL_MODEL: scored},
            {"": received},
            pixels=pixels_per_image(data.val),
        )
        evaluation = released[protocol.GLOBAL_MODEL]
    if request.settings.privacy.enabled:
        arrays, metrics = _private_round(request, site, data, received, on, started)
    else:
        log.warning("Training WITHOUT differential privacy, as the run configuration asks.")
        arrays, metrics, _ = _local_round(request, data, received, None, on, started)
    if request.settings.secure_aggregation:  # the update leaves later, masked
        return secure_aggregation.held_reply(
            msg, request, site, arrays, received, metrics, evaluation, policy
        )
    return replies.train_reply(
        msg,
        arrays,
        metrics,
        site.name,
        expected=_expected_update(request, received),
        evaluation=evaluation,
        metrics_policy=policy,
    )


def _expected_update(
    request: SiteRequest, received: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """What the update must hold: every received tensor, or only the trained ones."""
    names = update_names(request.settings.train)
    return received if names is None else {name: received[name] for name in names}


def _private_round(
    request: SiteRequest,
    site: Site,
    data: SiteData,
    received: dict[str, torch.Tensor],
    device: torch.device,
    started: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One DP round through the replay-or-spend sequence: re-sent if already released, else planned,
    trained, stored and committed to the ledger before it is returned for sending."""
    from fedscan.client import budget
    from fedscan.client.releases import Made, release_once
    from fedscan.common.models.training import DpStep

    train = request.settings.train
    rounds = planned_releases(request.settings.rounds, request.settings.cross_site)

    def plan(ledger: Any) -> budget.RoundPlan:
        return budget.plan_round(
            ledger,
            site.policy,
            request.settings.privacy,
            run_id=request.run_id,
            server_round=request.server_round,
            rounds=rounds,
            num_samples=len(data.train),
            batch_size=train.batch_size,
            local_epochs=train.local_epochs,
            extra=_other_releases(request),
        )

    def make(ledger: Any, round_plan: budget.RoundPlan) -> Made:
        dp = DpStep(
            round_plan.run.noise_multiplier, round_plan.run.clip_norm, round_plan.secure_mode
        )
        log.info(
            "Round %s: training on %s images with DP (noise multiplier %.3f)",
            request.server_round,
            len(data.train),
            dp.noise_multiplier,
        )
        arrays, metrics, history = _local_round(request, data, received, dp, device, started)
        fingerprint = budget.dataset_fingerprint(data.train)
        counted_now = False
        if counts.noised(site.policy, request.settings.privacy):
            metrics[protocol.NUM_EXAMPLES], counted_now = counts.released_count(
                ledger, request.run_id, len(data.train), fingerprint
            )
        metrics[protocol.EPSILON] = budget.epsilon_after(ledger, round_plan, history, counted_now)
        log.info(
            "Round %s: releasing the update (%s tensors; epsilon for this run %.3f of %g)",
            request.server_round,
            len(arrays),
            metrics[protocol.EPSILON],
            round_plan.run.target_epsilon,
        )
        return Made(arrays, metrics, history, fingerprint)

    return release_once(
        site.state_dir,
        run_id=request.run_id,
        server_round=request.server_round,
        plan=plan,
        make=make,
    )


def _local_round(
    request: SiteRequest,
    data: SiteData,
    received: dict[str, torch.Tensor],
    dp: Any,
    device: torch.device,
    started: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[HistoryEntry]]:
    """Train the received model on the site's training images (DP-SGD when ``dp`` is given)."""
    # Opacus (≈ 1.2 s to import) only where DP training happens: every message is a fresh process.
    from fedscan.common.models.networks import build_model
    from fedscan.common.models.trainable import ALL, freeze_all_but, trained_names
    from fedscan.common.models.training import scheduled, train_local

    train = scheduled(request.settings.train, request.server_round, request.settings.rounds)
    model = build_model(
        train.model, options=train.classical, outputs=outputs(train.task, train.classes)
    )
    model.load_state_dict(received)
    names = None if train.trainable == ALL else trained_names(model, train.trainable)
    if names is not None:  # the rest stays the global model's: no gradient, not sent back
        freeze_all_but(model, names)
    outcome = train_local(model, data.train, train, dp=dp, device=device)
    state = model.state_dict()
    arrays = {key: state[key].detach().cpu() for key in names or state}
    metrics = {
        protocol.NUM_EXAMPLES: len(data.train),
        protocol.TRAIN_LOSS: outcome.loss,
        protocol.STEPS: outcome.steps,
        protocol.NOISE_MULTIPLIER: dp.noise_multiplier if dp else 0.0,
        protocol.EPSILON: float("inf"),
        protocol.SITE_SECONDS: time.monotonic() - started,
    }  # data + training: what a round cannot beat
    return arrays, metrics, outcome.history


def _other_releases(request: SiteRequest) -> list[HistoryEntry]:
    """The run's releases besides its rounds, which its noise is calibrated for: the classical
    models' feature statistics."""
    from fedscan.common.models.feature_stats import stats_release

    train = request.settings.train
    return [stats_release(train.classical)] if get_model_spec(train.model).classical else []


app = make_client_app()
