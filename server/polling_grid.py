"""A Grid that polls for replies every 0.2 s instead of Flower's 3 s.

Flower 1.39's deployment Grid checks for replies every 3 s, so every
exchange waits 1.5 s on average after the last site answered — twice a round,
plus once more for the cross-site exchanges. This wrapper keeps the inner
Grid for everything and polls it every ``interval_s`` (a pull is one small
request to the local SuperLink). It also packs every message's array records
for the wire and unpacks the replies' (:mod:`fedscan.wire`), and gives its :class:`PullBudget`
each exchange's deadline, so that no reply's objects are waited for past it
(:mod:`fedscan.server.object_pulls`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedscan import wire
from fedscan.server.object_pulls import PullBudget

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.2


class DelegatingGrid(Grid):
    """Every call passed to ``inner`` as it is: the base of the coordinator's Grid wrappers."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


class PollingGrid(DelegatingGrid):
    """Delegates to ``inner``; ``send_and_receive`` polls every ``interval_s`` seconds."""

    def __init__(
        self, inner: Grid, interval_s: float = DEFAULT_INTERVAL_S, pulls: PullBudget | None = None
    ) -> None:
        super().__init__(inner)
        self.interval_s = interval_s
        self.pulls = pulls or PullBudget()  # bound to Flower's pulls by the ServerApp

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Each message's array records packed into one object each (:mod:`fedscan.wire`)."""
        messages = list(messages)
        for message in messages:
            if message.has_content():
                message.content = wire.pack(message.content)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies with their array records unpacked (:mod:`fedscan.wire`)."""
        return [_unpacked(reply) for reply in self.inner.pull_messages(message_ids)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull until every message has its reply or ``timeout`` seconds have passed."""
        messages = list(messages)
        destinations = dict(
            zip(
                self.push_messages(messages),
                (m.metadata.dst_node_id for m in messages),
                strict=False,
            )
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        self.pulls.deadline = deadline  # a reply's objects are not waited for past it
        try:
            return self._receive(set(destinations), destinations, deadline)
        finally:
            self.pulls.deadline = None

    def _receive(
        self, pending: set[str], destinations: dict[str, int], deadline: float | None
    ) -> list[Message]:
        """Pull until every reply is in, the last pull starting at or after ``deadline``: a pull
        can itself last until the deadline (a reply whose objects never come), and the replies
        that were listed meanwhile still count."""
        replies: list[Message] = []
        while pending:
            last = deadline is not None and time.monotonic() >= deadline
            arrived = [
                _from_destination(reply, destinations) for reply in self.pull_messages(pending)
            ]
            replies.extend(arrived)
            pending.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
            if last or not pending:
                break
            time.sleep(self.interval_s)
        return replies


def _from_destination(reply: Message, destinations: dict[str, int]) -> Message:
    """An error the SuperLink wrote for an unreachable site names the SuperLink as its sender: name
    the site."""
    site = destinations.get(reply.metadata.reply_to_message_id)
    if reply.has_error() and site is not None and reply.metadata.src_node_id != site:
        reply.metadata.__dict__["_src_node_id"] = (
            site  # Flower's own code sets metadata fields this way
        )
    return reply


def _unpacked(reply: Message) -> Message:
    if not reply.has_content():
        return reply
    try:
        reply.content = wire.unpack(reply.content)
    except (ValueError, KeyError, TypeError) as error:
        # Left as it came: its one "packed" array matches no model, so the update gate refuses it.
        log.warning("A reply's packed arrays do not unpack (%s)", error)
    return reply
