"""Secure aggregation in an in-process federation: the coordinator's model is the sites' FedAvg,
computed from masked updates only; robust aggregators are refused; a site may drop after masking."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message

from fedscan.client import secure_aggregation
from fedscan.client.app import make_client_app
from fedscan.client.audit import AuditLog
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.site import Site
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ConfigError, ErrorCode
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.secagg import SecAggAborted
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.report import build_report
from fedscan.server.rundir import RunDirectory
from tests.helpers import LoopbackGrid, site_resolver

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)
UNMASK = f"train.{protocol.SECAGG_UNMASK_ACTION}"


class RecordingGrid(LoopbackGrid):
    """Keeps every reply; ``silent`` nodes never answer a message of type ``at`` (killed)."""

    def __init__(self, *args: object, silent: Iterable[int] = (), at: str = UNMASK) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.replies: list[tuple[str, Message]] = []
        self.silent, self.at = set(silent), at

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        kept = [
            m
            for m in messages
            if not (m.metadata.message_type == self.at and m.metadata.dst_node_id in self.silent)
        ]
        replies = list(super().send_and_receive(kept, timeout=timeout))
        self.replies += [(m.metadata.message_type, r) for m, r in zip(kept, replies, strict=True)]
        return replies


def _grid(
    sites: list[Path], state: Path, silent: Iterable[int] = (), at: str = UNMASK
) -> RecordingGrid:
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(sites)]
    app = make_client_app(site_resolver(sources, state), device="cpu")
    return RecordingGrid(app, len(sources), silent=silent, at=at)


def _config(**options: object) -> RunConfig:
    return RunConfig(
        rounds=1,
        min_sites=3,
        train=FAST,
        cross_site=False,
        secure_aggregation=True,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
        **options,  # type: ignore[arg-type]
    )


def _record_updates(monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Each site's update as it is held, by site name."""
    updates: dict[str, np.ndarray] = {}
    held_reply = secure_aggregation.held_reply

    def recorded(msg: Message, request: object, site: Site, trained: dict, received: dict, *rest):
        updates[site.name] = secure_aggregation.flat_update(trained, received)
        return held_reply(msg, request, site, trained, received, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(secure_aggregation, "held_reply", recorded)
    return updates


def _assert_fedavg_of(
    updates: dict[str, np.ndarray], run_dir: Path, final: Path, grid: RecordingGrid
) -> dict:
    """The final model is the sent one plus the weighted mean update, within the bound."""
    (line,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sites = sorted(updates)
    weights = [line["train"][site][protocol.NUM_EXAMPLES] for site in sites]
    sent = grid.delivered[0].content.array_records[protocol.ARRAYS].to_torch_state_dict()
    expected = np.average(np.stack([updates[site] for site in sites]), axis=0, weights=weights)
    model, _ = load_checkpoint(final)
    got = secure_aggregation.flat_update(model.state_dict(), sent)
    summary = line["secure_aggregation"]
    assert np.abs(got - expected).max() <= summary["mean_error_bound"] + 1e-6  # float32 model
    assert np.abs(expected).max() > 100 * summary["mean_error_bound"]  # the bound says something
    return summary


def test_secure_round_gives_the_fedavg_of_the_updates_and_no_update_leaves(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record each site's update as it is held (it never leaves in the clear)
    updates = _record_updates(monkeypatch)
    grid = _grid(synthetic_sites, tmp_path / "state")
    # Execute
    result = run_federation(grid, _config(), RunDirectory.create(tmp_path / "runs"))
    # Assert: the plain weighted mean of the same updates, within the quantisation bound
    summary = _assert_fedavg_of(updates, result.run_dir.path, result.final_model, grid)
    assert summary["summed"] == 3 and summary["dropped"] == 0
    _assert_only_masked_updates_left(grid)
    # The sites' held state is gone, and each audit log shows its release as masked
    for i in range(3):
        state = tmp_path / "state" / f"site-{i}"
        assert not list((state / secure_aggregation.SECAGG_DIR).iterdir())
        releases = [e.get("release") for e in AuditLog(state).entries()]
        assert releases.count("masked") == 1
        (run,) = PrivacyLedger(state).runs()  # and the ledger: round 1 masked, clipped to 100
        assert PrivacyLedger(state).masked_rounds(run.run_id) == {1: 100.0}


def _assert_only_masked_updates_left(grid: RecordingGrid) -> None:
    """Nothing but masked values carried an update; every step answered by every site."""
    kinds = [kind for kind, _ in grid.replies]
    assert {kind for kind in kinds} == {
        "train",
        *(f"train.{a}" for a in secure_aggregation.HANDLERS),
        "evaluate",
    }
    for kind, reply in grid.replies:
        assert not reply.has_error()
        if kind.startswith("train"):
            arrays = set(reply.content.array_records)
            masked = kind == f"train.{protocol.SECAGG_MASK_ACTION}"
            assert arrays == ({protocol.SECAGG_MASKED} if masked else set())


@pytest.mark.parametrize("strategy", ["fedavg", pytest.param("fedadam", marks=pytest.mark.slow)])
def test_a_site_killed_after_masking_still_counts_in_the_sum(
    strategy: str,
    flower_identity,
    synthetic_sites: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    updates = _record_updates(monkeypatch)
    grid = _grid(synthetic_sites, tmp_path / "state", silent=[102])  # site-2 never unmasks
    result = run_federation(
        grid, _config(strategy=strategy), RunDirectory.create(tmp_path / "runs")
    )
    assert sum(kind == UNMASK for kind, _ in grid.replies) == 2
    # What site-2 held was deleted by the final evaluation, though it never answered the unmask
    assert not list((tmp_path / "state" / "site-2" / secure_aggregation.SECAGG_DIR).iterdir())
    if strategy == "fedavg":  # its masked input is in the sum, its self-mask removed
        summary = _assert_fedavg_of(updates, result.run_dir.path, result.final_model, grid)
        assert summary["summed"] == 3
    model, _ = load_checkpoint(result.final_model)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_fewer_maskers_than_the_threshold_abort_the_run_with_a_coded_reason(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    mask = f"train.{protocol.SECAGG_MASK_ACTION}"
    grid = _grid(synthetic_sites, tmp_path / "state", silent=[101, 102], at=mask)
    run_dir = RunDirectory.create(tmp_path / "runs")
    with pytest.raises(SecAggAborted) as aborted:
        run_federation(grid, _config(), run_dir)
    assert aborted.value.code == ErrorCode.QUORUM_LOST and aborted.value.stage == "masked-input"
    status = json.loads((run_dir.path / "status.json").read_text())
    assert status["state"] == "failed" and "threshold is 2" in status["reason"]


@pytest.mark.parametrize("strategy", ["median", "trimmed-mean", "krum", "fedavgm"])
def test_aggregators_that_need_each_update_are_refused(strategy: str) -> None:
    with pytest.raises(ConfigError, match="needs each site's own update") as refused:
        RunConfig.from_flat({"secure-aggregation": True, "strategy": strategy})
    assert refused.value.code == ErrorCode.INVALID_CONFIG
    assert "fedavg, fedprox, fedadam" in str(refused.value)


def test_secure_aggregation_turns_cross_site_off_unless_asked_and_refuses_it_then() -> None:
    assert not RunConfig.from_flat({"secure-aggregation": True}).cross_site
    assert RunConfig.from_flat({"secure-aggregation": True, "strategy": "fedadam"})
    with pytest.raises(ConfigError, match="cross-site = false"):
        RunConfig.from_flat({"secure-aggregation": True, "cross-site": True})
    with_central = {"secure-aggregation": True, "central-noise-multiplier": 1.0}
    assert RunConfig.from_flat(with_central).secure_update_bound == 1.0  # central DP's C
    assert RunConfig.from_flat({"secure-aggregation": True}).secure_update_bound == 100.0


@pytest.mark.parametrize("sigma", [1e-9, pytest.param(1.0, marks=pytest.mark.slow)])
def test_central_dp_under_secure_aggregation_clips_at_each_site_and_noises_the_mean(
    sigma: float,
    flower_identity,
    synthetic_sites: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: C far below a round's update norm, so every site's clip bites
    clip = 0.05
    updates = _record_updates(monkeypatch)
    grid = _grid(synthetic_sites, tmp_path / "state")
    config = _config(central_noise_multiplier=sigma, central_clip_norm=clip)
    # Execute
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    # Assert: the equal-weight mean of the updates, each clipped to C, plus noise of σ·C/3
    lines = (result.run_dir.path / "metrics.jsonl").read_text().splitlines()
    (line,) = [json.loads(x) for x in lines]
    assert min(np.linalg.norm(u) for u in updates.values()) > 10 * clip
    clipped = [u * min(1.0, clip / np.linalg.norm(u)) for u in updates.values()]
    sent = grid.delivered[0].content.array_records[protocol.ARRAYS].to_torch_state_dict()
    model, _ = load_checkpoint(result.final_model)
    residual = secure_aggregation.flat_update(model.state_dict(), sent) - np.mean(clipped, axis=0)
    bound = line["secure_aggregation"]["mean_error_bound"]
    if sigma < 1e-6:  # no noise to speak of: the clipped mean within the quantisation bound
        assert np.abs(residual).max() <= bound + 1e-6
    else:  # 25 000 coordinates: their spread within 3 % of σ·C/3
        assert residual.std() == pytest.approx(sigma * clip / 3, rel=0.03)
    assert line["central_epsilon"] > 0
    ledger = PrivacyLedger(tmp_path / "state" / "site-0")
    assert ledger.masked_rounds(ledger.runs()[0].run_id) == {1: clip}
    card = build_report(result.run_dir.path)[1].read_text()  # the model card says both
    assert "sites summed per round: 3), each clipped by its own site to L2 ≤ 0.05" in card
    assert f"Central DP on the aggregate: σ = {sigma:g}, C = {clip}" in card
