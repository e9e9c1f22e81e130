"""A site's side of secure aggregation over one round's messages (:mod:`fedscan.common.secagg`).

    train                      trained as ever (a DP release is committed to the ledger first);
                               the update is held, with a new SecAggSite; reply: metrics,
                               evaluation and the round's two public keys, no arrays
    train.secagg_share_keys    roster -> Shamir shares, each sealed for one peer
    train.secagg_mask          share delivery -> the update, quantised, weighted, masked
    train.secagg_unmask        unmask request -> shares of the peers' secrets; state deleted

Each message is answered in a fresh process, so the round's secrets wait on the site's disk.
Invariants:

- one file per run, ``state-dir/secagg/<hash of the run id>.npz``, mode 0600, written atomically:
  the update (trained − received model, float64, parameters in name order), its weight
  (num-examples; 1 under central DP, which averages sites equally), the L2 bound it is clipped
  to (the run's ``secure_update_bound``: central DP's C when the run has it) and the SecAggSite's
  state (private keys, self-mask seed, shares held); the
  next round's train replaces it, the round's answer (or the run's final evaluation, for a site
  that dropped mid-round) deletes it, and the update is dropped from it as soon as it has left
  masked;
- a step for another round than the one held is refused; the threshold is the one the shares
  were made for (a coordinator cannot change it mid-round);
- everything that leaves is built by :mod:`fedscan.client.replies`; the ledger (its round and
  clip bound) and the audit log record the masked input as a masked release before it is sent
  (:mod:`fedscan.client.ledger`, :mod:`fedscan.client.audit`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Message

from fedscan import secagg_records as records
from fedscan.client import replies
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.replies import Evaluation
from fedscan.client.requests import SiteRequest
from fedscan.client.site import Site
from fedscan.common import protocol
from fedscan.common.files import atomic_write_bytes
from fedscan.common.secagg import SecAggConfig, SecAggProtocolError, SecAggSite
from fedscan.common.secagg.config import DEFAULT_MAX_WEIGHT, MIN_THRESHOLD

log = logging.getLogger(__name__)

SECAGG_DIR = "secagg"
Handler = Callable[[Message, SiteRequest, Site, str | None], Message]


@dataclass(frozen=True)
class Held:
    """What a site keeps between the round's messages (see the module's invariants)."""

    run_id: str
    round: int
    dimension: int
    weight: int
    site: dict[str, Any]  # SecAggSite.to_state()
    update: np.ndarray  # empty once masked
    bound: float  # the L2 bound the update is clipped to when masked
    threshold: int = MIN_THRESHOLD  # the round's, fixed when the shares were made

    def restore(self, threshold: int) -> SecAggSite:
        return SecAggSite.from_state(
            self.site, _config(self.run_id, self.round, self.dimension, threshold, self.bound)
        )


def held_reply(
    msg: Message,
    request: SiteRequest,
    site: Site,
    trained: Mapping[str, torch.Tensor],
    received: Mapping[str, torch.Tensor],
    metrics: dict[str, Any],
    evaluation: Evaluation | None,
    metrics_policy: str,
) -> Message:
    """The train reply under secure aggregation: the update is held, its keys advertised."""
    update, settings = flat_update(trained, received), request.settings
    weight = min(max(int(round(metrics[protocol.NUM_EXAMPLES])), 1), DEFAULT_MAX_WEIGHT)
    if settings.central_noise_multiplier > 0:  # central DP's FedAvg weighs sites equally
        weight = 1
    bound = settings.secure_update_bound
    config = _config(request.run_id, request.server_round, update.size, MIN_THRESHOLD, bound)
    secagg = SecAggSite(str(msg.metadata.dst_node_id), config)
    advert = secagg.advertise()
    held = Held(
        request.run_id, request.server_round, update.size, weight, secagg.to_state(), update, bound
    )
    _save(site.state_dir, held)
    log.info("Round %s: update held for secure aggregation", request.server_round)
    return replies.held_train_reply(
        msg, metrics, site.name, advert, evaluation=evaluation, metrics_policy=metrics_policy
    )


def flat_update(
    trained: Mapping[str, torch.Tensor], received: Mapping[str, torch.Tensor]
) -> np.ndarray:
    """trained − received, float64, every received parameter flattened in name order (as the
    coordinator rebuilds it); a parameter the site did not send back (not trainable) moved 0."""
    return np.concatenate(
        [
            (trained.get(key, received[key]).double() - received[key].double()).reshape(-1).numpy()
            for key in sorted(received)
        ]
    )


def share_keys(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    held = _load(site.state_dir, request)
    secagg = held.restore(request.secagg_threshold)
    roster = records.read_roster(_record(msg), request.run_id, request.server_round)
    bundle = secagg.share_keys(roster)
    _save(site.state_dir, replace(held, site=secagg.to_state(), threshold=secagg.config.threshold))
    return replies.share_bundle_reply(msg, bundle, site.name)


def mask(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    held = _load(site.state_dir, request)
    if not held.update.size:
        raise SecAggProtocolError("This round's update was masked and sent already.")
    secagg = held.restore(held.threshold)
    delivery = records.read_delivery(_record(msg), secagg.site_id)
    masked = secagg.mask(delivery, held.update, held.weight)
    PrivacyLedger(site.state_dir).record_masked(held.run_id, held.round, held.bound)
    _save(site.state_dir, replace(held, site=secagg.to_state(), update=np.zeros(0)))
    log.info("Round %s: releasing the update masked (secure aggregation)", request.server_round)
    return replies.masked_input_reply(msg, masked, site.name)


def unmask(msg: Message, request: SiteRequest, site: Site, device: str | None) -> Message:
    held = _load(site.state_dir, request)
    secagg = held.restore(held.threshold)
    answer = secagg.unmask(records.read_request(_record(msg)))
    forget(site.state_dir, request.run_id)  # the round is over here
    return replies.unmask_reply(msg, answer, site.name)


def forget(state_dir: Path, run_id: str) -> None:
    """Delete what is held for ``run_id`` (a site that dropped mid-round never got its answer)."""
    _path(state_dir, run_id).unlink(missing_ok=True)


HANDLERS: dict[str, Handler] = {
    protocol.SECAGG_SHARE_ACTION: share_keys,
    protocol.SECAGG_MASK_ACTION: mask,
    protocol.SECAGG_UNMASK_ACTION: unmask,
}


def _config(
    run_id: str, server_round: int, dimension: int, threshold: int, bound: float
) -> SecAggConfig:
    try:
        return SecAggConfig(run_id, server_round, dimension, threshold, bound)
    except ValueError as error:  # a threshold the coordinator sent, unusable
        raise SecAggProtocolError(f"Secure-aggregation settings refused: {error}") from None


def _record(msg: Message) -> Any:
    if protocol.SECAGG not in msg.content.config_records:
        raise SecAggProtocolError("A secure-aggregation step came without its record.")
    return msg.content.config_records[protocol.SECAGG]


def _path(state_dir: Path, run_id: str) -> Path:
    name = hashlib.blake2b(run_id.encode(), digest_size=12).hexdigest()
    return Path(state_dir) / SECAGG_DIR / f"{name}.npz"


def _save(state_dir: Path, held: Held) -> None:
    meta = {
        "run": held.run_id,
        "round": held.round,
        "dimension": held.dimension,
        "weight": held.weight,
        "bound": held.bound,
        "site": held.site,
        "threshold": held.threshold,
    }
    payload = io.BytesIO()
    np.savez(payload, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), update=held.update)
    path = _path(state_dir, held.run_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_bytes(path, payload.getvalue(), private=True)


def _load(state_dir: Path, request: SiteRequest) -> Held:
    path = _path(state_dir, request.run_id)
    if not path.is_file():
        raise SecAggProtocolError("No update is held for this run's secure aggregation.")
    with np.load(path, allow_pickle=False) as stored:
        meta, update = json.loads(stored["meta"].tobytes()), np.array(stored["update"])
    if "bound" not in meta:  # written by a fedscan before the clip bound was held with it
        raise SecAggProtocolError("The held secure-aggregation state is from another fedscan.")
    if (meta["run"], meta["round"]) != (request.run_id, request.server_round):
        raise SecAggProtocolError(
            f"Round {request.server_round}'s secure-aggregation step, but round {meta['round']} "
            "is held."
        )
    return Held(
        meta["run"],
        meta["round"],
        meta["dimension"],
        meta["weight"],
        meta["site"],
        update,
        meta["bound"],
        meta["threshold"],
    )
