"""The SuperNode loop's sleeps as fedscan caps them (client/supernode_launcher.py)."""

from __future__ import annotations

import time

import pytest

from fedscan.client.supernode_launcher import CappedSleep, cap_supernode_polling


def test_a_poll_of_the_coordinator_waits_poll_interval_and_a_look_for_a_reply_far_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    capped = CappedSleep(0.5)
    capped.sleep(3)  # Flower: nothing from the coordinator, ask again in 3 s
    capped.sleep(0.5)  # Flower: no reply from the ClientApp yet, look again in 0.5 s
    capped.sleep(0.01)
    CappedSleep(0.02).sleep(0.5)  # a poll interval below the local look's cap wins
    assert slept == [0.5, 0.05, 0.01, 0.02]
    assert capped.monotonic is time.monotonic  # the rest of `time` is untouched


def test_the_cap_lands_in_this_flowers_supernode_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)
    assert cap_supernode_polling(0.5)
    assert isinstance(loop.time, CappedSleep) and loop.time.cap_s == 0.5
