"""The hospital's Flower ClientApp: train and evaluate handlers.

Data never leaves: handlers load the site's images locally, and every reply
is built in :mod:`fedscan.client.replies`. The coordinator sends settings,
never code; a site refuses settings from an incompatible fedscan version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedscan.client import budget, replies
from fedscan.common.cache import default_cache_dir
from fedscan.common.compat import VERSION_KEY, check_compatible
from fedscan.common.config import settings_from_message
from fedscan.common.device import resolve_device
from fedscan.common.errors import DataError, FedscanError
from fedscan.common.labels import LabelSpec
from fedscan.common.metrics import evaluate_model
from fedscan.common.models import build_model, get_model_spec
from fedscan.common.sources import FolderSource, SiteSource, sources_from_json
from fedscan.common.training import DpStep, train_local

log = logging.getLogger(__name__)

SourceResolver = Callable[[Context], SiteSource]
SIMULATION_NODE_KEY = "partition-id"  # set by Flower's Simulation Engine only


def site_source(context: Context) -> SiteSource:
    """The site's data, from its own node config.

    Deployment: ``flower-supernode --node-config 'data-dir="/data/site" site-name="A"
    cache-dir="/var/cache/fedscan"'`` (see :func:`folder_source` for every key).
    Simulation: the engine numbers its virtual nodes (``partition-id``) and the
    run config lists the simulated sites; a real site never reads that list.
    """
    if SIMULATION_NODE_KEY in context.node_config:
        sites = sources_from_json(str(context.run_config.get("simulation-sites", "[]")))
        index = int(context.node_config[SIMULATION_NODE_KEY])
        if index >= len(sites):
            raise DataError(f"Simulated node {index} has no site in the run configuration.")
        return sites[index]
    return folder_source(context.node_config, default_name=f"node-{context.node_id}")


def folder_source(node_config: Mapping[str, Any], *, default_name: str) -> FolderSource:
    """The site's folder and ingestion settings from its node config (kebab-case keys)."""
    data_dir = node_config.get("data-dir")
    if not data_dir:
        raise DataError("This site has no data folder configured (node config 'data-dir').")

    def text(key: str, default: str = "") -> str:
        return str(node_config.get(key, default))

    labels = LabelSpec(csv=text("labels-csv"), key=text("label-key", "path"), key_column=text("key-column"),
                       label_column=text("label-column", "label"), patient_column=text("patient-column"))
    return FolderSource(name=text("site-name", default_name), site_dir=str(data_dir), labels=labels,
                        frames=text("frames", "middle"), cache_dir=text("cache-dir", default_cache_dir()),
                        workers=int(node_config.get("decode-workers", 2)),
                        decode_timeout_s=float(node_config.get("decode-timeout-s", 60.0)))


def site_device(context: Context) -> str:
    """``device`` from the node config (deployment) or the run config (simulation)."""
    return str(context.node_config.get("device", context.run_config.get("device", "auto")))


def make_client_app(resolve_source: SourceResolver = site_source, *, device: str | None = None) -> ClientApp:
    """A ClientApp whose data comes from ``resolve_source(context)``."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        chosen = device or site_device(context)
        return _guarded(msg, context, lambda: _train(msg, context, resolve_source, chosen))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        chosen = device or site_device(context)
        return _guarded(msg, context, lambda: _evaluate(msg, context, resolve_source, chosen))

    return app


def _guarded(msg: Message, context: Context, handler: Callable[[], Message]) -> Message:
    """Turn fedscan errors into coded replies; anything else is logged here, not sent."""
    try:
        return handler()
    except FedscanError as error:
        log.warning("Refusing the request: %s", error)
        return replies.error_reply(msg, error)
    except Exception:  # an unexpected failure must not ship its text (paths, data) off-site
        log.exception("Local failure while handling a %s request", msg.metadata.message_type)
        return replies.error_reply(msg, FedscanError("The site failed locally; see the site's log."))


def _train(msg: Message, context: Context, resolve_source: SourceResolver, device: str) -> Message:
    config = dict(msg.content["config"])
    check_compatible(config.get(VERSION_KEY))
    settings, privacy, rounds = settings_from_message(config)
    source = resolve_source(context)
    data = source.load(get_model_spec(settings.model).input_size)
    model = build_model(settings.model)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    dp_step = None
    if privacy.enabled:
        plan = budget.plan_round(context, privacy, num_samples=len(data.train),
                                 batch_size=settings.batch_size, local_epochs=settings.local_epochs,
                                 rounds=rounds)
        dp_step = DpStep(plan.noise_multiplier, privacy.clip_norm, plan.history)
    else:
        log.warning("Training WITHOUT differential privacy, as the run configuration asks.")
    outcome = train_local(model, data.train, settings, dp=dp_step, device=resolve_device(device))
    epsilon = float("inf")
    if dp_step is not None:
        epsilon = budget.record_round(context, dp_step.noise_multiplier, outcome.history, privacy.delta)
    metrics = {"num-examples": len(data.train), "train-loss": outcome.loss, "epsilon": epsilon,
               "steps": outcome.steps,
               "noise-multiplier": dp_step.noise_multiplier if dp_step else 0.0}
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return replies.train_reply(msg, arrays, metrics, source.name)


def _evaluate(msg: Message, context: Context, resolve_source: SourceResolver, device: str) -> Message:
    config = dict(msg.content["config"])
    check_compatible(config.get(VERSION_KEY))
    model_name = str(config.get("model", ""))
    source = resolve_source(context)
    data = source.load(get_model_spec(model_name).input_size)
    model = build_model(model_name)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    metrics = evaluate_model(model, data.val, device=resolve_device(device))
    metrics["num-examples"] = len(data.val)
    metrics.pop("n", None)
    return replies.evaluate_reply(msg, metrics, source.name)


app = make_client_app()
