"""Following a submitted run: every round and event as it happens, then its final status.

The run directory is the source of truth (status.json, metrics.jsonl, events.jsonl); Flower is
asked only whether the run's process is still there. Every round logged before the final status
is passed on before it is returned (a 1-round run can finish between two polls).

Following survives the control API's hiccups: a failed ``flwr`` status call is retried, and
following gives up only after :data:`FOLLOW_RETRIES` consecutive failures (retried
:data:`RETRY_AFTER_S` apart) or :data:`FOLLOW_RETRY_S` seconds of them, whichever comes first.
Even then the run is declared lost (code :data:`COORDINATOR_GONE`: resume it) only when the
coordinator's control port refuses connections; while it answers, the run is going on (code
:data:`STILL_GOING`) and must not be resubmitted.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedscan.common.addresses import split_address
from fedscan.common.errors import FedscanError
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.launch import RunRequest, flower_run_status, server_log_tail
from fedscan.server.rundir import (
    FINAL_STATES,
    FINISHED_STATES,
    REPORT_EVENTS,
    STATE_FAILED,
    Event,
    RunDirectory,
)

log = logging.getLogger(__name__)

_FINISHED = "finished"
# One failed status call once ended `fedscan run` mid-run while the coordinator and the run were
# fine. A failing call takes up to ≈ 8 s (measured: `flwr ls` against a closed port), so 5 checks
# retried 3 s apart span at most ≈ 1 min: a brief control-API outage is ridden out, and a dead
# coordinator is reported within 2 minutes of its death.
FOLLOW_RETRIES = 5
FOLLOW_RETRY_S = 120.0
RETRY_AFTER_S = 3.0
# The report is written after the final status: 5 to 16 s measured on 2 shared cores.
REPORT_WAIT_S = 60.0
CONNECT_TIMEOUT_S = 3.0  # the control-port check; a reachable port answers in milliseconds
COORDINATOR_GONE = "coordinator-gone"  # its control port refuses connections: resume the run
STILL_GOING = "run-still-going"  # the coordinator answers; only following stopped

Observer = Callable[[dict[str, Any]], None]


@dataclass
class _Feed:
    """How much of metrics.jsonl and events.jsonl the follower has passed on: every round, and
    the events from the latest submission on (those of a resumed run's earlier attempts were
    shown then)."""

    on_round: Observer
    on_event: Observer | None
    rounds: int = 0
    events: int | None = None
    seen: set[str] = field(default_factory=set)  # the kinds of event passed on

    def catch_up(self, run_dir: RunDirectory) -> None:
        history = run_dir.read_metrics()
        for record in history[self.rounds :]:
            self.on_round(record)
        self.rounds = len(history)
        if self.on_event is not None:
            events = run_dir.read_events()
            if self.events is None:
                submitted = [i for i, e in enumerate(events) if e.get("event") == Event.SUBMITTED]
                self.events = submitted[-1] + 1 if submitted else 0
            for event in events[self.events :]:
                self.on_event(event)
                self.seen.add(str(event.get("event")))
            self.events = len(events)

    def wait_for_report(self, run_dir: RunDirectory, poll_s: float, wait_s: float) -> None:
        """Pass on the report's event too: it comes just after the final status (from a ServerApp
        that writes events at all, and for at most ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while self.seen and not self.seen & REPORT_EVENTS and time.monotonic() < deadline:
            time.sleep(poll_s)
            self.catch_up(run_dir)


def follow(
    request: RunRequest,
    run_dir: RunDirectory,
    flower_run_id: int,
    on_round: Observer,
    *,
    on_event: Observer | None = None,
    poll_s: float = 1.0,
    check_every_s: float = 10.0,
    timeout_s: float | None = None,
    report_wait_s: float = REPORT_WAIT_S,
) -> dict[str, Any]:
    """Feed each completed round to ``on_round`` (and each event to ``on_event``) until the run
    ends; its final status. Every round is fed before the final status is returned."""
    feed, checker = _Feed(on_round, on_event), _StatusChecks(request, run_dir, flower_run_id)
    last_check = time.monotonic()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        feed.catch_up(run_dir)
        status = run_dir.read_status()
        if status.get("state") in FINAL_STATES:
            feed.catch_up(run_dir)  # rounds logged between the read above and the final status
            if status["state"] in FINISHED_STATES:
                feed.wait_for_report(run_dir, poll_s, report_wait_s)
            return status
        if time.monotonic() - last_check > (RETRY_AFTER_S if checker.failures else check_every_s):
            flower_status = checker.flower_status()
            last_check = time.monotonic()  # after the call: a failing one may take ≈ 8 s
            if flower_status is not None and flower_status.startswith(_FINISHED):
                time.sleep(poll_s)  # the ServerApp writes status.json just before it exits
                feed.catch_up(run_dir)
                return _ended(request, run_dir, flower_run_id, flower_status)
        if deadline is not None and time.monotonic() > deadline:
            # Following stopped, not the run: never reported as a failed run.
            raise FedscanError(
                f"Stopped following run {run_dir.run_id} after {timeout_s:g} s; it may still be "
                f"going: `fedscan status`, `fedscan logs {run_dir.run_id}`.",
                code=STILL_GOING,
            )
        time.sleep(poll_s)


def _ended(
    request: RunRequest, run_dir: RunDirectory, flower_run_id: int, flower_status: str
) -> dict[str, Any]:
    """The status of a run Flower reports finished: its own, or why it wrote none."""
    status = run_dir.read_status()
    if status.get("state") in FINAL_STATES:
        return status
    try:
        tail = server_log_tail(request.coordinator, flower_run_id)
    except FedscanError as error:
        tail = f"(the log is not available: {error})"
    return {
        "state": STATE_FAILED,
        "reason": f"Flower reports {flower_status} before the run wrote its status. End of the "
        f"ServerApp's log:\n{tail}",
    }


@dataclass
class _StatusChecks:
    """Flower's status of the run, riding out transient control-API errors (bounded: see the
    module docstring)."""

    request: RunRequest
    run_dir: RunDirectory
    flower_run_id: int
    failures: int = 0
    failing_since: float = 0.0

    def flower_status(self) -> str | None:
        """Flower's status; None after a failure that is still within the retry bounds."""
        try:
            status = flower_run_status(self.request.coordinator, self.flower_run_id)
        except FedscanError as error:
            if self.failures == 0:
                self.failing_since = time.monotonic()
            self.failures += 1
            log.warning("Run status check %s failed: %s", self.failures, error)
            failing_for = time.monotonic() - self.failing_since
            if self.failures < FOLLOW_RETRIES and failing_for < FOLLOW_RETRY_S:
                return None
            raise self._stopped(error, failing_for) from None
        self.failures = 0
        return status

    def _stopped(self, error: FedscanError, failing_for: float) -> FedscanError:
        """Why following stops: the coordinator is gone (resume) or still there (keep the run)."""
        tried = f"{self.failures} status checks failed over {failing_for:.0f} s (last: {error})"
        run_id = self.run_dir.run_id
        if not coordinator_listening(self.request.coordinator):
            return FedscanError(
                f"The coordinator is gone: its control port "
                f"{self.request.coordinator.control_address} refuses connections; {tried}.",
                code=COORDINATOR_GONE,
            )
        return FedscanError(
            f"Stopped following run {run_id}, which is still going: the coordinator answers on "
            f"{self.request.coordinator.control_address}, but {tried}. Do not resume it; follow it "
            f"with `fedscan status` and `fedscan logs {run_id}`.",
            code=STILL_GOING,
        )


def coordinator_listening(coordinator: CoordinatorConfig) -> bool:
    """Whether the coordinator's control port accepts a connection (False: refused or
    unreachable)."""
    host, port = coordinator.control_host, split_address(coordinator.control_address)[1]
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False
