"""An in-process federation: every message goes straight to a ClientApp in this process.

For tests and benchmarks that need many federations quickly or need to
interpose on sites (e.g. a Byzantine site in ``bench/byzantine.py``): no
SuperLink, no Ray, no processes. Not for real data — sites share a process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Context, Message, Metadata, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

SiteApp = Callable[[Message, Context], Message]


@contextmanager
def flower_identity() -> Iterator[None]:
    """Strategies build messages with the process's task identity, which a Flower process would
    set."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        # Flower's own reset of its process identity (its attributes are typed for a set identity).
        TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None  # type: ignore[assignment]


def instruction(
    content: RecordDict, message_type: str, node_id: int = 1, run_id: int = 1
) -> Message:
    """A message as the coordinator would send it (explicit metadata, no Flower runtime)."""
    metadata = Metadata(
        run_id=run_id,
        message_id=f"m-{time.monotonic_ns()}",
        src_node_id=0,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    # Flower's Message takes ``metadata`` for a message built outside its runtime; its public
    # overloads leave it out.
    return Message(content=content, metadata=metadata)  # type: ignore[call-overload]


def node_context(
    node_id: int, partition_id: int, run_id: int = 1, num_partitions: int = 3
) -> Context:
    return Context(
        run_id=run_id,
        node_id=node_id,
        state=RecordDict(),
        run_config={},
        node_config={"partition-id": partition_id, "num-partitions": num_partitions},
    )


class InProcessGrid(Grid):
    """Delivers each message to ``client_app`` with the receiving node's Context (node ids 100,
    101, …)."""

    def __init__(self, client_app: SiteApp, num_nodes: int) -> None:
        self.client_app = client_app
        self.contexts = {
            100 + i: node_context(100 + i, i, num_partitions=num_nodes) for i in range(num_nodes)
        }
        self.delivered: list[Message] = []

    def set_run(self, run: Any) -> None:  # not used in-process
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            delivered = instruction(
                message.content, message.metadata.message_type, node_id=message.metadata.dst_node_id
            )
            self.delivered.append(delivered)
            replies.append(self.client_app(delivered, self.contexts[message.metadata.dst_node_id]))
        return replies
