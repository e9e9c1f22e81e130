"""The site's empirical privacy audit: membership-inference attacks on a model, at the site.

``fedscan privacy audit --checkpoint final.pt --config site.toml`` attacks the checkpoint with the
loss-threshold attack and offline LiRA (:mod:`fedscan.common.membership`). Members are the site's
own training split, loaded exactly as its ClientApp trains on it; non-members are its held-back
validation split. Shadow models are trained here, with the product's training function, on random
halves of members ∪ non-members, with the run's settings and — when the run used DP — DP-SGD at
the run's ε for this site (the ledger's record of the run when there is one).

Invariants: nothing is sent anywhere and nothing enters the ledger; the result is written only to
``<state-dir>/audits/<UTC time>-<checkpoint sha256[:12]>.json`` (mode 0600) and holds counts and
figures only — no pixel, label, patient identifier, image key or file path. Hospital-side: imports
no coordinator code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedscan import __version__
from fedscan.client.audit_export import AUDIT_DIR, audit_records
from fedscan.client.site_config import SiteConfig
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.errors import ConfigError, DataError, ErrorCode
from fedscan.common.files import atomic_write_bytes, file_sha256, json_safe
from fedscan.common.membership import attack_figures, fit_out, lira_offline, loss_attack
from fedscan.common.membership.scores import (
    QUERY_SHIFTS,
    check_classifier,
    example_loss,
    model_logits,
    view_confidence,
)
from fedscan.common.membership.shadows import Progress, shadow_splits, train_shadows
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.training import DpStep
from fedscan.common.privacy import (
    HistoryEntry,
    PrivacyConfig,
    calibrate_noise,
    check_delta,
    planned_releases,
    sample_rate,
    steps_per_epoch,
)
from fedscan.common.tasks import BINARY, SEGMENTATION

RUN_CONFIG_BESIDE = "run-config.json"  # what a run directory keeps beside final.pt
DEFAULT_SHADOWS = 8
MIN_IMAGES = 20  # per side: fewer make every figure noise, and each shadow trains on half the pool


@dataclass(frozen=True)
class AuditPlan:
    """How the shadows train: the run's settings with its epochs at this site in one go (rounds ×
    local epochs), and its DP target here (``privacy.enabled`` False: the run had no DP)."""

    run: RunConfig
    privacy: PrivacyConfig
    source: str  # where the settings came from, for the output
    extra: tuple[HistoryEntry, ...] = ()  # the run's other training-image releases (see below)

    @property
    def epochs(self) -> int:
        return self.run.rounds * self.run.train.local_epochs


def audit_plan(checkpoint: Path, meta: dict[str, Any], config: SiteConfig) -> AuditPlan:
    """The run's settings: ``run-config.json`` beside the checkpoint (a run directory), else the
    checkpoint's own JSON with the defaults; its DP target from the site's ledger record of the
    run when there is one (what the site enforced), capped by the site's policy."""
    beside = Path(checkpoint).with_name(RUN_CONFIG_BESIDE)
    if beside.is_file():
        try:
            run = RunConfig.from_flat(json.loads(beside.read_text()))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{RUN_CONFIG_BESIDE} beside the checkpoint: {error}") from None
        source = "the run configuration beside the checkpoint"
    else:
        run, source = _run_from_meta(meta), "the checkpoint and the default settings"
    privacy, recorded = _ledger_privacy(config, str(meta.get("run_id", "")), run.privacy)
    if recorded:
        source += "; DP as the site's ledger recorded the run"
    elif recorded is False and privacy.enabled:  # the run had DP, yet this site released nothing
        source += "; the site's ledger has no release of this run: did the site train in it?"
    policy = config.policy
    capped = replace(
        privacy,
        epsilon=min(privacy.epsilon, policy.max_epsilon_per_run),
        delta=min(privacy.delta, policy.delta),
        secure_mode=privacy.secure_mode or policy.secure_mode,
    )
    return AuditPlan(run, capped, source, _other_releases(run, config, capped))


def _run_from_meta(meta: dict[str, Any]) -> RunConfig:
    flat: dict[str, Any] = {protocol.config_key("model"): meta["model"]}
    for name in ("task", "classes", "classical", "rounds"):
        if meta.get(name) not in (None, "", []):
            flat[protocol.config_key(name)] = meta[name]
    return RunConfig.from_flat(flat)


def _ledger_privacy(
    config: SiteConfig, run_id: str, privacy: PrivacyConfig
) -> tuple[PrivacyConfig, bool | None]:
    """The run's DP as the ledger recorded it; True: recorded, False: not, None: no ledger or
    no run id to look for."""
    from fedscan.client.ledger import LEDGER_FILE, PrivacyLedger

    if not run_id or not (config.state_dir / LEDGER_FILE).is_file():
        return privacy, None
    record = PrivacyLedger(config.state_dir).run(run_id)
    if record is None:
        return privacy, False
    found = PrivacyConfig(
        epsilon=record.target_epsilon,
        delta=record.delta,
        clip_norm=record.clip_norm,
        enabled=True,
        secure_mode=privacy.secure_mode,
    )
    return found, True


def privacy_audit(
    checkpoint: Path,
    config: SiteConfig,
    *,
    shadows: int = DEFAULT_SHADOWS,
    seed: int = 0,
    device: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Attack ``checkpoint`` on the site's own data; write and return the audit record."""
    from fedscan.common.device import resolve_device
    from fedscan.common.models.checkpoint import load_checkpoint

    started = time.monotonic()
    shadow_splits(2 * MIN_IMAGES, shadows, seed=seed)  # a bad --shadows fails before any work
    model, meta = load_checkpoint(Path(checkpoint))
    task = str(meta.get("task", BINARY))
    check_classifier(SEGMENTATION if get_model_spec(meta["model"]).task == SEGMENTATION else task)
    plan = audit_plan(Path(checkpoint), meta, config)
    pool, is_member = _pool(_site_data(config, plan))
    on = resolve_device(device or config.device)
    target = _target_scores(model, pool, plan.run.train.task, on)
    buffers = {name: value.detach().cpu() for name, value in model.named_buffers()}
    splits = shadow_splits(len(pool), shadows, seed=seed)
    dp = _shadow_dp(plan, int(splits.sum(axis=1).min()))
    settings = replace(plan.run.train, local_epochs=plan.epochs)  # the run's epochs in one go
    phi = train_shadows(
        pool, splits, settings, dp=dp, device=on, buffers=buffers, progress=progress
    )
    record = _record(plan, meta, target, is_member, phi, splits)
    record.update(
        shadow_noise_multiplier=dp.noise_multiplier if dp else 0.0,
        query_views=len(QUERY_SHIFTS) if pool.images.ndim == 4 else 1,  # volumes: one query
        site=config.name,
        checkpoint_sha256=file_sha256(Path(checkpoint)),
        seconds=round(time.monotonic() - started, 1),
    )
    _write(config.state_dir, record)
    return record


def _site_data(config: SiteConfig, plan: AuditPlan) -> SiteData:
    """The site's split as its ClientApp loads it for this run; too few images is an error."""
    from fedscan.client.scoring import load_for
    from fedscan.client.site import Site

    site = Site(config.data, config.state_dir, config.policy, config.device, config.run_policy)
    data = load_for(site, plan.run.train)
    if min(len(data.train), len(data.val)) < MIN_IMAGES:
        raise DataError(
            f"The audit needs at least {MIN_IMAGES} training and {MIN_IMAGES} validation images "
            f"at this site; it has {len(data.train)} and {len(data.val)}. Add images (or raise "
            "[data] val-fraction when validation is the short side).",
            code=ErrorCode.TOO_FEW_SAMPLES,
        )
    return data


def _pool(data: SiteData) -> tuple[ImageSet, np.ndarray]:
    """Members (the training split) then non-members (validation), without their keys."""
    members, others = data.train, data.val
    images = torch.cat([members.images, others.images])
    pool = ImageSet(images, torch.cat([members.labels, others.labels]))
    return pool, np.r_[np.ones(len(members), bool), np.zeros(len(others), bool)]


def _target_scores(
    model: torch.nn.Module, pool: ImageSet, task: str, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """The target's per-image loss (one query, the loss attack's) and φ over the shifted views
    (LiRA's, queried as the shadows are)."""
    labels = pool.labels.numpy()
    losses = example_loss(model_logits(model, pool.images, device=device), labels, task)
    return losses, view_confidence(model, pool.images, labels, task, device=device)


def _shadow_dp(plan: AuditPlan, shadow_images: int) -> DpStep | None:
    """The DP step a site would take on a shadow's images: σ calibrated as the site calibrates
    a run (its planned releases × local epochs, Poisson rate batch / images), or None."""
    privacy, run, train = plan.privacy, plan.run, plan.run.train
    if not privacy.enabled:
        return None
    check_delta(privacy.delta, shadow_images)
    epochs = planned_releases(run.rounds, run.cross_site) * train.local_epochs
    sigma = calibrate_noise(
        target_epsilon=privacy.epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate(shadow_images, train.batch_size),
        total_steps=epochs * steps_per_epoch(shadow_images, train.batch_size),
        extra=list(plan.extra),
    )
    return DpStep(sigma, privacy.clip_norm, privacy.secure_mode)


def _other_releases(
    run: RunConfig, config: SiteConfig, privacy: PrivacyConfig
) -> tuple[HistoryEntry, ...]:
    """What a site's calibration plans besides the rounds: a classical model's feature
    statistics, and the noised training-image count (:mod:`fedscan.client.counts`)."""
    from fedscan.client import counts
    from fedscan.common.models.feature_stats import stats_release

    extra = (
        [stats_release(run.train.classical)] if get_model_spec(run.train.model).classical else []
    )
    return (*extra, *([counts.count_entry()] if counts.noised(config.policy, privacy) else []))


def _record(
    plan: AuditPlan,
    meta: dict[str, Any],
    target: tuple[np.ndarray, np.ndarray],
    is_member: np.ndarray,
    shadow_phi: np.ndarray,
    splits: np.ndarray,
) -> dict[str, Any]:
    """The audit's figures and how they were made: counts and figures only."""
    losses, target_phi = target
    fit = fit_out(shadow_phi, splits)
    delta = plan.privacy.delta
    attacks = [
        attack_figures("loss threshold", loss_attack(losses), is_member, delta=delta),
        attack_figures("LiRA offline", lira_offline(target_phi, fit), is_member, delta=delta),
    ]
    return {
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fedscan_version": __version__,
        "run_id": meta.get("run_id"),
        "model": plan.run.train.model,
        "task": plan.run.train.task,
        "settings_from": plan.source,
        "dp": plan.privacy.enabled,
        "target_epsilon": plan.privacy.epsilon if plan.privacy.enabled else None,
        "members": int(is_member.sum()),
        "non_members": int((~is_member).sum()),
        "mean_loss_members": float(losses[is_member].mean()),
        "mean_loss_non_members": float(losses[~is_member].mean()),
        "shadows": len(splits),
        "shadow_epochs": plan.epochs,
        "global_variance": fit.global_variance,
        "attacks": [figures.to_json() for figures in attacks],
    }


def _write(state_dir: Path, record: dict[str, Any]) -> Path:
    folder = Path(state_dir) / AUDIT_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = record["created_at"].replace("-", "").replace(":", "")
    path = folder / f"{stamp}-{record['checkpoint_sha256'][:12]}.json"
    atomic_write_bytes(path, json.dumps(json_safe(record), indent=2).encode(), private=True)
    return path


def latest_audit(site_config: SiteConfig) -> dict[str, Any] | None:
    """The site's newest audit record (see the module), or None when it has run none."""
    return next(audit_records(site_config.state_dir), None)
