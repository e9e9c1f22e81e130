"""PollingGrid: prompt polling, bounded waits, and errors attributed to the site they concern."""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Error, Message, Metadata, RecordDict

from fedscan.server.inprocess import InProcessGrid
from fedscan.server.polling_grid import PollingGrid

SUPERLINK = 1


def _metadata(message_id: str, src: int, dst: int, reply_to: str = "") -> Metadata:
    return Metadata(
        run_id=1,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )


class ScriptedGrid(InProcessGrid):
    """Site 7 answers; the SuperLink answers for site 8 (unreachable); site 9 never answers."""

    def __init__(self) -> None:
        super().__init__(lambda message, context: message, 0)
        self.pushed: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushed = list(messages)
        return [f"id-{m.metadata.dst_node_id}" for m in self.pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for message_id in message_ids:
            if message_id == "id-7":
                replies.append(Message(RecordDict(), metadata=_metadata("r7", 7, 0, message_id)))
            elif message_id == "id-8":
                replies.append(
                    Message(
                        metadata=_metadata("r8", SUPERLINK, SUPERLINK, message_id),
                        error=Error(code=5, reason="Node Unavailable"),
                    )
                )
        return replies


def test_replies_arrive_within_the_timeout_and_superlink_errors_name_the_site() -> None:
    grid = PollingGrid(ScriptedGrid(), interval_s=0.05)
    sent = [Message(RecordDict(), metadata=_metadata(f"m{node}", 0, node)) for node in (7, 8, 9)]
    started = time.monotonic()
    replies = list(grid.send_and_receive(sent, timeout=0.5))
    assert (
        0.5 <= time.monotonic() - started < 2.0
    )  # site 9 is waited for, but not beyond the timeout
    assert sorted(reply.metadata.src_node_id for reply in replies) == [7, 8]
    assert [
        reply.has_error() for reply in sorted(replies, key=lambda r: r.metadata.src_node_id)
    ] == [False, True]


class StallingGrid(ScriptedGrid):
    """The first pull lasts past the exchange's deadline (a reply whose objects never come) and
    finds nothing; site 7's reply was listed meanwhile."""

    def __init__(self, stall_s: float) -> None:
        super().__init__()
        self.stall_s, self.pulls = stall_s, 0

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        if self.pulls == 1:
            time.sleep(self.stall_s)
            return []
        return super().pull_messages(message_ids)


def test_a_reply_listed_while_a_pull_stalled_past_the_deadline_still_counts() -> None:
    """In CI a site killed mid-upload held one pull until the deadline; the two replies that
    arrived meanwhile were dropped, and secure aggregation lost its quorum."""
    grid = PollingGrid(StallingGrid(stall_s=0.4), interval_s=0.05)
    sent = [Message(RecordDict(), metadata=_metadata(f"m{node}", 0, node)) for node in (7, 9)]
    replies = list(grid.send_and_receive(sent, timeout=0.2))
    assert [reply.metadata.src_node_id for reply in replies] == [7]
