"""The hospital's Flower ClientApp: train and evaluate handlers.

Data never leaves: handlers load the site's images locally, and every reply
is built (and checked against an allow-list) in :mod:`fedscan.client.replies`.
Every DP release is committed to the site's privacy ledger before it is sent.
The coordinator sends settings, never code; a site refuses settings from an
incompatible fedscan version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedscan.client import replies
from fedscan.client.releases import load_release, save_release
from fedscan.client.site import Site, SiteResolver, resolve_site
from fedscan.common.compat import VERSION_KEY, check_compatible
from fedscan.common.config import EVALUATE_FIRST, settings_from_message
from fedscan.common.crosssite import CROSS_SITE_ACTION, planned_releases
from fedscan.common.data import ImageSet, SiteData
from fedscan.common.device import resolve_device
from fedscan.common.errors import FedscanError
from fedscan.common.feature_stats import STATS_ACTION, stats_release
from fedscan.common.metrics import binary_metrics, predict
from fedscan.common.models import build_model, get_model_spec
from fedscan.common.pooled import ScoreHistogram

if TYPE_CHECKING:
    from fedscan.common.training import TrainSettings

log = logging.getLogger(__name__)


def make_client_app(resolve: SiteResolver = resolve_site, *, device: str | None = None) -> ClientApp:
    """A ClientApp serving the site that ``resolve(context)`` describes."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _guarded(msg, lambda: _train(msg, resolve(context), device))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _guarded(msg, lambda: _evaluate(msg, resolve(context), device))

    @app.evaluate(CROSS_SITE_ACTION)
    def cross_site(msg: Message, context: Context) -> Message:
        return _guarded(msg, lambda: _cross_evaluate(msg, resolve(context), device))

    @app.query(STATS_ACTION)
    def statistics(msg: Message, context: Context) -> Message:
        from fedscan.client.feature_stats import feature_stats

        return _guarded(msg, lambda: feature_stats(msg, resolve(context), run_key(msg, dict(msg.content["config"]))))

    return app


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


def run_key(msg: Message, config: dict) -> str:
    """The run this message belongs to: the coordinator's run id, else Flower's."""
    return str(config.get("run-id") or f"flower-run-{msg.metadata.run_id}")


def _train(msg: Message, site: Site, device: str | None) -> Message:
    # Opacus (≈ 1.2 s to import) only where DP training happens: every message is a fresh process.
    from fedscan.client import budget
    from fedscan.common.ledger import PrivacyLedger
    from fedscan.common.training import DpStep, train_local

    config = dict(msg.content["config"])
    check_compatible(config.get(VERSION_KEY))
    settings, privacy, rounds = settings_from_message(config)
    run_id, server_round = run_key(msg, config), int(config.get("server-round", 0))
    received = msg.content["arrays"].to_torch_state_dict()
    started = time.monotonic()
    data = load_for(site, settings.model)
    # The previous round's aggregate (the model just received), scored before training on it when the
    # coordinator asks: it saves a separate evaluate exchange per round.
    evaluation = (_score((settings.model, settings.classical), msg.content["arrays"], data.val, threshold=0.5,
                         device=resolve_device(device or site.device)) if config.get(EVALUATE_FIRST) else None)
    ledger = PrivacyLedger(site.state_dir) if privacy.enabled else None
    # Asked again (coordinator retry or restart): re-send the recorded release, spend nothing. A stored
    # update the ledger lacks was never sent (the ledger commits first), so it is trained afresh.
    stored = load_release(site.state_dir, run_id, server_round) if ledger else None
    if stored is not None and ledger.has_release(run_id, server_round):
        log.info("Round %s of this run was already released; sending the same update", server_round)
        return replies.train_reply(msg, stored[0], stored[1], site.name, expected=received, evaluation=evaluation)
    model = build_model(settings.model, options=settings.classical)
    model.load_state_dict(received)
    plan = None
    if ledger is not None:
        plan = budget.plan_round(ledger, site.policy, privacy, run_id=run_id, server_round=server_round,
                                 rounds=planned_releases(rounds, bool(config.get("cross-site", False))),
                                 num_samples=len(data.train), batch_size=settings.batch_size,
                                 local_epochs=settings.local_epochs, extra=_other_releases(settings))
    else:
        log.warning("Training WITHOUT differential privacy, as the run configuration asks.")
    dp = DpStep(plan.run.noise_multiplier, plan.run.clip_norm, plan.secure_mode) if plan else None
    outcome = train_local(model, data.train, settings, dp=dp, device=resolve_device(device or site.device))
    arrays = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    metrics = {"num-examples": len(data.train), "train-loss": outcome.loss, "steps": outcome.steps,
               "noise-multiplier": dp.noise_multiplier if dp else 0.0, "epsilon": float("inf"),
               "site-seconds": time.monotonic() - started}  # data + training: what a round cannot go below
    if plan is not None:
        # Stored, then committed to the ledger, then sent: a crash never loses a spend.
        metrics["epsilon"] = budget.epsilon_after(ledger, plan, outcome.history)
        save_release(site.state_dir, run_id, server_round, arrays, metrics)
        budget.record_release(ledger, plan, server_round=server_round, history=outcome.history,
                              fingerprint=budget.dataset_fingerprint(data.train))
    return replies.train_reply(msg, arrays, metrics, site.name, expected=received, evaluation=evaluation)


def _other_releases(settings: TrainSettings) -> list[tuple[float, float, int]]:
    """The run's releases besides its rounds, which its noise is calibrated for: the classical models'
    feature statistics."""
    return [stats_release(settings.classical)] if get_model_spec(settings.model).classical else []


def load_for(site: Site, model: str) -> SiteData:
    """The site's data at ``model``'s input size; with every image's mask when the model segments."""
    spec = get_model_spec(model)
    if spec.task == "segmentation":
        return site.source.load(spec.input_size, masks=True)
    return site.source.load(spec.input_size)


def _evaluate(msg: Message, site: Site, device: str | None) -> Message:
    started = time.monotonic()
    model, val, on, threshold = _evaluation_inputs(msg, site, device)
    metrics, histogram = _score(model, msg.content["arrays"], val, device=on, threshold=threshold)
    metrics["site-seconds"] = time.monotonic() - started
    return replies.evaluate_reply(msg, metrics, site.name, histogram=histogram.to_lists() if histogram else None)


def _cross_evaluate(msg: Message, site: Site, device: str | None) -> Message:
    """Every model in the message (global, each site's local one) on this site's validation data."""
    model, val, on, threshold = _evaluation_inputs(msg, site, device)
    results = {name: _score(model, arrays, val, device=on, threshold=threshold)
               for name, arrays in msg.content.array_records.items()}
    return replies.cross_site_reply(msg, results, site.name)


def _evaluation_inputs(msg: Message, site: Site, device: str | None
                       ) -> tuple[tuple[str, str], ImageSet, torch.device, float]:
    """((model name, classical options), validation images, device, threshold) of an evaluation request,
    after the version check."""
    config = dict(msg.content["config"])
    check_compatible(config.get(VERSION_KEY))
    model = (str(config.get("model", "")), str(config.get("classical", "")))
    data = load_for(site, model[0])
    return model, data.val, resolve_device(device or site.device), float(config.get("threshold", 0.5))


def _score(model: tuple[str, str], arrays: ArrayRecord, val: ImageSet, *, device: torch.device,
           threshold: float) -> tuple[dict[str, float], ScoreHistogram | None]:
    """Metrics of one model (name, classical options) on the site's validation images, and their score
    histogram; for segmentation Dice, IoU, Hausdorff-95 and the overlap counts (no histogram)."""
    name, options = model
    built = build_model(name, check_dp=False, options=options)  # evaluation only: no DP-SGD, no Opacus import
    built.load_state_dict(arrays.to_torch_state_dict())
    if get_model_spec(name).task == "segmentation":
        from fedscan.common.segmentation import evaluate_segmentation

        metrics, counts = evaluate_segmentation(built, val, device=device)
        return {**metrics, **counts.to_metrics(), "num-examples": len(val)}, None  # counts: pooled centrally
    scores, loss = predict(built, val, device=device)
    labels = val.labels.numpy()
    metrics = binary_metrics(labels, scores, threshold=threshold)
    metrics.update(loss=loss, **{"num-examples": len(val)})
    metrics.pop("n", None)
    return metrics, ScoreHistogram.of(scores, labels)  # counts per score bin: pooled at the coordinator


app = make_client_app()
