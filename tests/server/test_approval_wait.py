"""A round short of its quorum because a site has not approved the run waits for it within
join-timeout-s (saying so in the run's events), and goes on once the site approves."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fedscan.client.app import make_client_app
from fedscan.client.approvals import Approvals
from fedscan.client.run_policy import RunPolicy
from fedscan.client.site import Site
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server import rounds
from fedscan.server.app import run_federation
from fedscan.server.launch import describe_state
from fedscan.server.rundir import RunDirectory
from tests.helpers import OPEN_POLICY, LoopbackGrid


def _approve_when_pending(
    state: Path, run_dir: RunDirectory, seen: list[str], stop: threading.Event
) -> None:
    """The site's operator: approves the run once it is pending and the coordinator's status
    (what `fedscan status` prints) says it waits for it."""
    deadline = time.monotonic() + 60
    while not stop.wait(0.2) and time.monotonic() < deadline:
        pending = [r for r in Approvals(state).runs() if r["state"] == "pending"]
        shown = describe_state(run_dir.read_status())
        if pending and "waiting for approval" in shown:
            seen.append(shown)
            Approvals(state).decide(pending[0]["run_id"], "approved", by="test")
            return


def test_the_round_waits_for_a_pending_approval_then_trains_every_site(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rounds, "APPROVAL_POLL_S", 0.5)
    state = tmp_path / "state"
    sites = [
        Site(FolderSource(f"site-{i}", str(p)), state / f"site-{i}", OPEN_POLICY)
        for i, p in enumerate(synthetic_sites[:2])
    ]
    sites[1] = Site(
        sites[1].source,
        sites[1].state_dir,
        OPEN_POLICY,
        run_policy=RunPolicy(require_approval=True),
    )
    grid = LoopbackGrid(
        make_client_app(lambda context: sites[int(context.node_config["partition-id"])]), 2
    )
    config = RunConfig(
        rounds=1,
        min_sites=2,
        cross_site=False,
        join_timeout_s=120,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    stop, seen = threading.Event(), []
    run_dir = RunDirectory.create(tmp_path / "runs")
    operator = threading.Thread(
        target=_approve_when_pending, args=(state / "site-1", run_dir, seen, stop)
    )
    operator.start()
    try:
        result = run_federation(grid, config, run_dir)
    finally:
        stop.set()
        operator.join(timeout=10)
    assert sorted(result.history[-1]["train"]) == ["site-0", "site-1"]
    events = [json.loads(line) for line in (result.run_dir.path / "events.jsonl").open()]
    waits = [e for e in events if e["event"] == "waiting-for-approval"]
    assert waits and waits[0]["pending"] == 1 and waits[0]["left_s"] > 0
    assert seen and seen[0].startswith("round 1: waiting for approval at node-101"), seen
    # site-0 trained in the first send and replayed its stored release when the round was resent
    assert len(Approvals(state / "site-1").runs()) == 1
