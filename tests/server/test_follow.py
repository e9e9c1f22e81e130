"""Following a run (``fedscan run``) over a fake run directory: no Flower, no coordinator.

Every round is passed on before the final status, transient control-API errors are ridden out
within their bounds, and a run is declared lost only when the coordinator's control port refuses
connections.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedscan.common.config import RunConfig
from fedscan.common.errors import FedscanError
from fedscan.server import follow as following
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.follow import COORDINATOR_GONE, FOLLOW_RETRIES, STILL_GOING, follow
from fedscan.server.launch import RunRequest
from fedscan.server.rundir import RunDirectory

ROUND_1 = {"round": 1, "aggregated": {"loss": 0.5}, "pooled": {"auc": 0.75}, "elapsed_s": 9.0}


@dataclass(frozen=True)
class RaceyRunDirectory(RunDirectory):
    """A run directory whose only round is logged just after the follower's first metrics read,
    and whose status is final from the start: a 1-round run finishing between two polls."""

    reads: list[int] = field(default_factory=list)

    def read_metrics(self) -> list[dict[str, Any]]:
        self.reads.append(1)
        return [] if len(self.reads) == 1 else [ROUND_1]

    def read_status(self) -> dict[str, Any]:
        return {"state": "completed", "rounds": 1}


def _request(tmp_path: Path, control_address: str = "127.0.0.1:9") -> RunRequest:
    coordinator = CoordinatorConfig(state_dir=tmp_path, control_address=control_address)
    return RunRequest(coordinator, RunConfig(rounds=1))


def test_a_run_that_completes_between_two_polls_still_shows_its_round(tmp_path: Path) -> None:
    run_dir = RaceyRunDirectory(tmp_path / "run", "run")
    shown: list[dict[str, Any]] = []
    status = follow(_request(tmp_path), run_dir, 1, shown.append, poll_s=0.0)
    assert status["state"] == "completed" and shown == [ROUND_1]


def test_events_are_passed_on_once_each_and_an_unfinished_line_waits(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.append_event("round-training", round=1, rounds=1, sites=3)  # before a crash
    run_dir.append_event("submitted", resumed=True)  # `fedscan run --resume`
    run_dir.append_event("round-training", round=1, rounds=1, sites=2)
    with open(run_dir.file("events.jsonl"), "a") as handle:
        handle.write('{"event": "round-agg')  # the ServerApp is writing this one
    assert len(run_dir.read_events()) == 3
    run_dir.write_status("completed")
    events: list[dict[str, Any]] = []
    follow(
        _request(tmp_path),
        run_dir,
        1,
        lambda _: None,
        on_event=events.append,
        poll_s=0.0,
        report_wait_s=0.2,
    )
    assert [(e["event"], e["sites"]) for e in events] == [("round-training", 2)]


def test_the_report_event_after_the_final_status_is_still_passed_on(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.append_event("round-training", round=1, rounds=1, sites=2)
    run_dir.write_status("completed-with-gaps", gaps=[])
    events: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event["event"])
        if len(events) == 1:  # the ServerApp writes its report while the follower waits
            run_dir.append_event("report-written")

    follow(_request(tmp_path), run_dir, 1, lambda _: None, on_event=on_event, poll_s=0.01)
    assert events == ["round-training", "report-written"]


@pytest.fixture()
def status_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Flower's status answers, in order: "fail" raises the control API's error."""
    answers: list[str] = []

    def flower_run_status(coordinator: CoordinatorConfig, flower_run_id: int) -> str:
        answer = answers.pop(0) if answers else "fail"
        if answer == "fail":
            raise FedscanError("`flwr ls` gave no answer (exit 1): connection reset")
        return answer

    monkeypatch.setattr(following, "flower_run_status", flower_run_status)
    monkeypatch.setattr(following, "server_log_tail", lambda *_: "ServerApp exited")
    monkeypatch.setattr(following, "RETRY_AFTER_S", 0.0)
    yield answers


def test_transient_control_api_errors_do_not_stop_following(
    tmp_path: Path, status_calls: list[str]
) -> None:
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.write_status("running")
    status_calls += ["fail"] * (FOLLOW_RETRIES - 1) + ["finished:completed"]
    run_dir.append_metrics(ROUND_1)
    status = follow(_request(tmp_path), run_dir, 1, lambda _: None, poll_s=0.0, check_every_s=0)
    # Flower said finished before status.json did: the follower waits poll_s, then says why.
    assert status["state"] == "failed" and "finished:completed" in status["reason"]
    assert "ServerApp exited" in status["reason"]
    assert status_calls == []  # every answer was asked for: 4 failures were ridden out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_coordinator_whose_control_port_refuses_is_gone_and_the_run_resumable(
    tmp_path: Path, status_calls: list[str]
) -> None:
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.write_status("running")
    request = _request(tmp_path, f"127.0.0.1:{_free_port()}")  # nothing listens there
    with pytest.raises(FedscanError) as raised:
        follow(request, run_dir, 1, lambda _: None, poll_s=0.0, check_every_s=0)
    assert raised.value.code == COORDINATOR_GONE
    assert f"{FOLLOW_RETRIES} status checks failed" in str(raised.value)


def test_a_coordinator_that_still_answers_keeps_its_run(
    tmp_path: Path, status_calls: list[str]
) -> None:
    run_dir = RunDirectory.create(tmp_path, "run")
    run_dir.write_status("running")
    with socket.socket() as listener:  # the control port accepts connections
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        request = _request(tmp_path, f"127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(FedscanError) as raised:
            follow(request, run_dir, 1, lambda _: None, poll_s=0.0, check_every_s=0)
    assert raised.value.code == STILL_GOING
    message = str(raised.value)
    assert "still going" in message and "Do not resume" in message
    assert "`fedscan status`" in message and "`fedscan logs run`" in message
