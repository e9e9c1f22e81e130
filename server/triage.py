"""Reply triage: which sites' replies count, and why the others do not — for every exchange of a
run.

Every exchange (training rounds, evaluation, the cross-site matrix, the classical models' feature
statistics) sorts its replies the same way: by site name, not by arrival; a site's own name as it
reported it (error replies carry none, so the name it gave earlier is kept); a refusal for every
error reply and every reply from an incompatible fedscan, with its coded reason. What is left is
for the exchange itself to read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message

from fedscan.common import protocol
from fedscan.common.errors import VersionMismatchError
from fedscan.common.version import check_compatible

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A site whose reply did not count, in which phase, and why (its coded reason)."""

    site: str
    phase: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"site": self.site, "phase": self.phase, "reason": self.reason}


def reported_site_name(reply: Message) -> str | None:
    """The name a site gave in its reply (error replies carry none)."""
    if reply.has_error() or protocol.SITE not in reply.content.config_records:
        return None
    record = reply.content.config_records[protocol.SITE]
    return str(record[protocol.SITE_NAME]) if protocol.SITE_NAME in record else None


@dataclass
class SiteNames:
    """Node id → the name each site reported, remembered for its later replies."""

    names: dict[int, str] = field(default_factory=dict)

    def of(self, reply: Message) -> str:
        node = reply.metadata.src_node_id
        reported = reported_site_name(reply)
        if reported is not None:
            self.names[node] = reported
        return self.names.get(node, f"node-{node}")


def triage(
    replies: Iterable[Message], names: SiteNames, phase: str
) -> tuple[list[Message], list[Refusal]]:
    """(the replies that count, the refusals), both in site-name order."""
    accepted: list[Message] = []
    refusals: list[Refusal] = []
    for reply in sorted(replies, key=names.of):
        site = names.of(reply)
        problem = reply_problem(reply)
        if problem is None:
            accepted.append(reply)
        else:
            log.warning("Site %s refused %s: %s", site, phase, problem)
            refusals.append(Refusal(site, phase, problem))
    return accepted, refusals


def reply_problem(reply: Message) -> str | None:
    """Why ``reply`` cannot count (an error reply, an incompatible fedscan); None when it can."""
    if reply.has_error():
        return str(reply.error.reason)
    site = reply.content.config_records.get(protocol.SITE)
    try:
        check_compatible(None if site is None else _text(site.get(protocol.VERSION)))
    except VersionMismatchError as error:
        return f"{error.code}: {error}"
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def first_metrics(reply: Message) -> dict[str, Any]:
    """A reply's (only) metric record, as a plain dict."""
    record = next(iter(reply.content.metric_records.values()))
    return {key: value for key, value in record.items()}
