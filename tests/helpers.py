"""Test helpers: Flower messages outside a Flower process, and an in-process Grid."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedscan.client.site import Site, SiteResolver
from fedscan.common.site_config import PrivacyPolicy
from fedscan.common.sources import SiteSource

# Permissive enough that only the run's own settings decide (tests of the policy set their own).
OPEN_POLICY = PrivacyPolicy(max_epsilon_per_run=100.0, max_epsilon_lifetime=1000.0, delta=0.5, min_samples=1)


def site_resolver(sources: Sequence[SiteSource], state_root: Path,
                  policies: Sequence[PrivacyPolicy] | None = None) -> SiteResolver:
    """Simulated-node resolver: node ``partition-id`` i is ``sources[i]``, with its own state folder."""
    sites = [Site(source, Path(state_root) / source.name, (policies or [OPEN_POLICY] * len(sources))[i])
             for i, source in enumerate(sources)]
    return lambda context: sites[int(context.node_config["partition-id"])]


def instruction(content: RecordDict, message_type: str, node_id: int = 1, run_id: int = 1) -> Message:
    """A message as the coordinator would send it (explicit metadata, no Flower runtime)."""
    metadata = Metadata(run_id=run_id, message_id=f"m-{time.monotonic_ns()}", src_node_id=0,
                        dst_node_id=node_id, reply_to_message_id="", group_id="1",
                        created_at=time.time(), ttl=3600.0, message_type=message_type)
    return Message(content=content, metadata=metadata)


def node_context(node_id: int, partition_id: int, run_id: int = 1) -> Context:
    return Context(run_id=run_id, node_id=node_id, state=RecordDict(), run_config={},
                   node_config={"partition-id": partition_id, "num-partitions": 3})


class LoopbackGrid(Grid):
    """Delivers each message straight to a ClientApp in this process (one Context per node)."""

    def __init__(self, client_app: ClientApp, num_nodes: int) -> None:
        self.client_app = client_app
        self.contexts = {100 + i: node_context(100 + i, i) for i in range(num_nodes)}
        self.delivered: list[Message] = []

    def set_run(self, run: Any) -> None:  # pragma: no cover - not used in-process
        raise NotImplementedError

    @property
    def run(self) -> Any:  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for message in messages:
            delivered = instruction(message.content, message.metadata.message_type,
                                    node_id=message.metadata.dst_node_id)
            self.delivered.append(delivered)
            replies.append(self.client_app(delivered, self.contexts[message.metadata.dst_node_id]))
        return replies
