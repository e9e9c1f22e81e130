"""Coordinator checkpoints and resume, in process: file format, crash during a write, resumed
runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from flwr.app import Message

from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import DamagedCheckpoint, QuorumError, ResumeError
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.resume import resumable_config
from fedscan.server.round_checkpoint import (
    KEEP,
    RoundCheckpoint,
    checkpoint_path,
    decode,
    encode,
    load_latest,
    write_checkpoint,
)
from fedscan.server.rundir import CHECKPOINT_DIR, RunDirectory
from tests.helpers import LoopbackGrid, site_resolver

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)
SITES = ["site-0", "site-1", "site-2"]


class CoordinatorKilled(BaseException):
    """Stands in for SIGKILL: no handler in the run may catch it, so status.json still says
    running."""


def _grid(sites: list[Path], state: Path) -> LoopbackGrid:
    sources = [FolderSource(name, str(path)) for name, path in zip(SITES, sites, strict=True)]
    return LoopbackGrid(make_client_app(site_resolver(sources, state), device="cpu"), len(sources))


def _die_after(grid: LoopbackGrid, exchanges: int) -> LoopbackGrid:
    """The coordinator dies once ``exchanges`` exchanges were answered (sites trained, nothing
    aggregated)."""
    deliver, count = grid.send_and_receive, 0

    def send_and_receive(
        messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        nonlocal count
        replies = list(deliver(messages, timeout=timeout))
        count += 1
        if count == exchanges:
            raise CoordinatorKilled
        return replies

    grid.send_and_receive = send_and_receive
    return grid


def _checkpoint(server_round: int, size: int = 4) -> RoundCheckpoint:
    return RoundCheckpoint(
        server_round,
        {"w": torch.full((size,), float(server_round))},
        {"config": {"rounds": 9}, "rng": [1, 2]},
        {"m_t": {"w": torch.ones(size)}},
    )


def test_a_checkpoint_round_trips_and_any_damage_is_detected() -> None:
    blob = encode(_checkpoint(3))
    restored = decode(blob)
    assert restored.round == 3 and torch.equal(restored.arrays["w"], torch.full((4,), 3.0))
    assert restored.state == {"config": {"rounds": 9}, "rng": [1, 2]}
    assert torch.equal(restored.strategy_tensors["m_t"]["w"], torch.ones(4))
    flipped = bytearray(blob)
    flipped[-10] ^= 0x01
    for damaged in (blob[: len(blob) // 2], bytes(flipped), b"PK\x03\x04 a zip file", b""):
        with pytest.raises(DamagedCheckpoint):
            decode(damaged)


def test_the_newest_valid_checkpoint_is_loaded_and_old_ones_are_pruned(tmp_path: Path) -> None:
    for server_round in range(1, 6):
        write_checkpoint(tmp_path, _checkpoint(server_round))
    kept = sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir())
    assert kept == [f"round-{r:05d}.ckpt" for r in range(6 - KEEP, 6)]
    assert load_latest(tmp_path).round == 5
    newest = checkpoint_path(tmp_path, 5)
    newest.write_bytes(
        newest.read_bytes()[:-100]
    )  # torn write on a filesystem without atomic rename
    assert load_latest(tmp_path).round == 4
    assert load_latest(tmp_path / "elsewhere") is None


_WRITER = """
import os, sys, time, torch
from pathlib import Path
from fedscan.server.round_checkpoint import RoundCheckpoint, write_checkpoint
real_replace = os.replace
# a busy disk: the temp file lives long enough for kills to land in it
def slow_replace(source, target):
    time.sleep(0.3)
    real_replace(source, target)
os.replace = slow_replace
root = Path(sys.argv[1])
start = int(sys.argv[2])
arrays = {f"w{i}": torch.randn(1_000_000) for i in range(8)}  # 32 MB: each write takes a while
print("ready", flush=True)
for server_round in range(start, start + 10_000):
    write_checkpoint(root, RoundCheckpoint(server_round, arrays, {"round": server_round}))
"""


def test_sigkill_during_checkpoint_writes_never_leaves_an_unloadable_latest(tmp_path: Path) -> None:
    rng = random.Random(1234)
    caught_mid_write, next_round = 0, 1
    for _ in range(8):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(next_round)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 1.5))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        folder = tmp_path / CHECKPOINT_DIR
        caught_mid_write += any(p.name.endswith(".tmp") for p in folder.iterdir())
        newest = sorted(folder.glob("round-*.ckpt"))[-1]
        restored = decode(newest.read_bytes())  # the newest file itself, not a fallback, must load
        assert restored.state == {"round": restored.round}
        next_round = restored.round + 1
    assert caught_mid_write >= 1, (
        "no kill landed during a write; the test did not exercise the race"
    )


# CI time: FedAdam in the suite, FedAvgM (its momentum vector) with -m slow.
@pytest.mark.parametrize("strategy", ["fedadam", pytest.param("fedavgm", marks=pytest.mark.slow)])
def test_a_killed_coordinator_resumes_to_the_same_weights_and_one_log_line_per_round(
    strategy: str, flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # No site DP (its noise is the sites' own entropy by design) and a server optimiser whose
    # state (FedAdam's moments, FedAvgM's momentum) must survive.
    config = RunConfig(
        rounds=3,
        min_sites=3,
        strategy=strategy,
        train=FAST,
        cross_site=False,
        seed=5,
        privacy=PrivacyConfig(enabled=False),
    )
    reference = run_federation(
        _grid(synthetic_sites, tmp_path / "a"),
        config,
        RunDirectory.create(tmp_path / "runs", "reference"),
    )
    run_dir = RunDirectory.create(tmp_path / "runs", "interrupted")
    with pytest.raises(CoordinatorKilled):  # round 2's replies are in; round 2 is not aggregated
        run_federation(_die_after(_grid(synthetic_sites, tmp_path / "b"), 2), config, run_dir)
    assert run_dir.read_status()["state"] == "running"
    assert load_latest(run_dir.path).round == 1
    resumed = run_federation(
        _grid(synthetic_sites, tmp_path / "b"), resumable_config(run_dir), run_dir, resume=True
    )
    expected, actual = (
        load_checkpoint(r.final_model)[0].state_dict() for r in (reference, resumed)
    )
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert [line["round"] for line in run_dir.read_metrics()] == [1, 2, 3]
    assert run_dir.read_status()["state"] == "completed"
    with pytest.raises(ResumeError, match="already completed"):
        resumable_config(run_dir)


def test_a_resumed_dp_run_never_counts_a_released_round_twice(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=3,
        min_sites=3,
        train=FAST,
        cross_site=False,
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    run_dir = RunDirectory.create(tmp_path / "runs", "dp-run")
    with pytest.raises(
        CoordinatorKilled
    ):  # every site released round 2; the coordinator never saw it
        run_federation(_die_after(_grid(synthetic_sites, tmp_path / "state"), 2), config, run_dir)
    ledgers = {site: PrivacyLedger(tmp_path / "state" / site) for site in SITES}
    assert all(
        [r.round for r in ledger.releases("dp-run")] == [-1, 1, 2] for ledger in ledgers.values()
    )  # -1: the run's noised training count (client/counts.py), released with round 1
    round_two = {site: ledger.releases("dp-run")[2] for site, ledger in ledgers.items()}
    run_federation(_grid(synthetic_sites, tmp_path / "state"), config, run_dir, resume=True)
    for site, ledger in ledgers.items():
        releases = ledger.releases("dp-run")
        assert [r.round for r in releases] == [-1, 1, 2, 3]
        assert (
            releases[2] == round_two[site]
        )  # the round asked again was answered from the stored release
    history = run_dir.read_metrics()
    assert [line["round"] for line in history] == [1, 2, 3]
    assert all(0 < eps <= 8.0 * 1.001 for eps in history[-1]["epsilon"].values())


def test_a_site_that_vanishes_between_rounds_ends_the_run_within_the_join_timeout(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=3,
        min_sites=3,
        train=FAST,
        cross_site=False,
        join_timeout_s=2.0,
        privacy=PrivacyConfig(enabled=False),
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    deliver = grid.send_and_receive

    def lose_a_site_after_round_one(
        messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = list(deliver(messages, timeout=timeout))
        grid.contexts.pop(102, None)
        return replies

    grid.send_and_receive = lose_a_site_after_round_one
    run_dir = RunDirectory.create(tmp_path / "runs")
    started = time.monotonic()
    with pytest.raises(QuorumError, match="Only 2 of the 3 required sites"):
        run_federation(grid, config, run_dir)
    # It ended on the 2 s join timeout, not on a round timeout: a wall-clock bound no tighter
    # than the round timeout, so a busy machine (load 11-14 on 2 cores) cannot fail it.
    assert time.monotonic() - started < config.round_timeout_s
    assert run_dir.read_status()["state"] == "failed"
    assert load_latest(run_dir.path).round == 1  # once the site is back, the run can be resumed


def test_a_site_missing_one_round_does_not_stall_it_and_rejoins_the_next(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    config = RunConfig(
        rounds=3, min_sites=2, train=FAST, cross_site=False, privacy=PrivacyConfig(enabled=False)
    )
    grid = _grid(synthetic_sites, tmp_path / "state")
    deliver, exchanges = grid.send_and_receive, 0

    def site_2_silent_in_round_two(
        messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        nonlocal exchanges
        exchanges += 1
        return [
            reply
            for reply in deliver(messages, timeout=timeout)
            if not (exchanges == 2 and reply.metadata.src_node_id == 102)
        ]

    grid.send_and_receive = site_2_silent_in_round_two
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    trained = [sorted(line["train"]) for line in result.run_dir.read_metrics()]
    assert trained == [SITES, ["site-0", "site-1"], SITES]
