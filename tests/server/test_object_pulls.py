"""The coordinator's object pulls: Flower's own pull, bounded by the exchange's deadline.

A reply whose objects never come (its site died mid-upload) must end as an error by the
exchange's deadline, not after Flower's 7 200 s budget or the SuperLink's upload expiry (181 s
in the secure-aggregation deployment test)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from flwr.app import Message, RecordDict
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    ObjectUnavailableError,
    pull_objects,
)
from flwr.superlink.grid import http_grid

from fedscan.server.object_pulls import FIRST_PULL_RETRY_S, PullBudget, bound_object_pulls
from fedscan.server.polling_grid import PollingGrid
from tests.server.test_polling_grid import ScriptedGrid, _metadata


@pytest.fixture
def flower_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's own ``pull_objects`` in ``http_grid`` again after the test."""
    monkeypatch.setattr(http_grid, "pull_objects", pull_objects)


def _never_there(object_id: str) -> bytes:
    raise ObjectUnavailableError(object_id)


def test_an_object_that_never_comes_fails_at_the_exchange_s_deadline(flower_pull: None) -> None:
    budget = PullBudget()
    assert bound_object_pulls(budget)
    budget.deadline = time.monotonic() + 0.5
    started = time.monotonic()
    with pytest.raises(ObjectPullError):
        http_grid.pull_objects(["a", "b"], _never_there)
    # MIN_PULL_S (2 s) from the pull's start, then at most one capped backoff (≤ 1.2 × 1.6 s)
    assert 1.9 <= time.monotonic() - started < 4.5


def test_the_first_retry_comes_after_0_05_s_and_no_deadline_keeps_flower_s_limit(
    flower_pull: None,
) -> None:
    calls: list[dict] = []
    budget = PullBudget()
    assert bound_object_pulls(budget)
    assert bound_object_pulls(PullBudget())  # a second budget wraps Flower's pull, not the first's
    assert bound_object_pulls(budget)
    assert http_grid.pull_objects.args == (pull_objects,)  # type: ignore[attr-defined]
    budget.pull(lambda *args, **kwargs: calls.append(kwargs), ["a"], _never_there)
    assert calls == [{"initial_backoff": FIRST_PULL_RETRY_S}]  # Flower's max_time stays
    tries: list[float] = []

    def second_time(object_id: str) -> bytes:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise ObjectUnavailableError(object_id)
        return b"there"

    assert http_grid.pull_objects(["a"], second_time) == {"a": b"there"}
    assert tries[1] - tries[0] < 0.5  # 0.05 s (± 20 %); Flower's own first retry: 1 s


class DeadlineNotingGrid(ScriptedGrid):
    """Site 7 answers; notes the pull budget's deadline at every pull."""

    def __init__(self, budget: PullBudget) -> None:
        super().__init__()
        self.budget = budget
        self.deadlines: list[float | None] = []

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.deadlines.append(self.budget.deadline)
        return super().pull_messages(message_ids)


def test_the_polling_grid_gives_each_exchange_s_deadline_to_its_pulls() -> None:
    budget = PullBudget()
    inner = DeadlineNotingGrid(budget)
    grid = PollingGrid(inner, interval_s=0.05, pulls=budget)
    sent = [Message(RecordDict(), metadata=_metadata("m7", 0, 7))]
    before = time.monotonic()
    assert len(list(grid.send_and_receive(sent, timeout=30))) == 1
    (deadline,) = inner.deadlines
    assert deadline is not None and before + 29 < deadline <= time.monotonic() + 30
    assert budget.deadline is None  # between exchanges: Flower's own limit
