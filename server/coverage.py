"""Which sites each phase of a run reached: the gaps that make a run ``completed-with-gaps``.

Invariant: a run is ``completed`` only when it has no gap. The phases that count are every
training round (which needs its quorum, ``min-sites``), the classical models' feature statistics,
the final evaluation, and — when cross-site is on — the cross-site fine-tune and the cross-site
evaluation, both of which need every site. A :class:`Gap` names its phase, each site the phase
needed and did not get with why, and the sites that spent a DP release on a result the run lost
(a site that never answered may have spent one: its ledger commits before it sends, which its
reason says). Site names and counts only: no file paths, no patient data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import Message

from fedscan.common import protocol
from fedscan.server.polling_grid import DelegatingGrid
from fedscan.server.triage import Refusal, SiteNames, reply_problem

PHASE_TRAINING = "training"
PHASE_FEATURE_STATISTICS = "feature statistics"
PHASE_FINAL_EVALUATION = "final evaluation"
PHASE_FINE_TUNE = "cross-site fine-tune"
PHASE_CROSS_SITE_EVALUATION = "cross-site evaluation"
PHASE_CROSS_SITE_VALIDATION = "cross-site validation"  # the whole of it, when it failed as such

NOT_CONNECTED = "not connected"


@dataclass(frozen=True)
class Gap:
    """A phase that did not reach every site it needed."""

    phase: str
    missing: Mapping[str, str]  # site → why its result is missing
    spent: tuple[str, ...] = ()  # sites whose DP release in this phase went into a lost result
    needed: int = 0  # how many sites the phase needed
    round: int | None = None  # training rounds only
    unnamed: int = 0  # sites the quorum still lacked beyond those named (never joined the run)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "phase": self.phase,
            "needed": self.needed,
            "missing": dict(self.missing),
            "spent_dp_release": list(self.spent),
        }
        if self.round is not None:
            document["round"] = self.round
        if self.unnamed:
            document["unnamed_missing"] = self.unnamed
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Gap:
        return cls(
            str(document["phase"]),
            {str(k): str(v) for k, v in dict(document.get("missing", {})).items()},
            tuple(str(s) for s in document.get("spent_dp_release", ())),
            int(document.get("needed", 0)),
            None if document.get("round") is None else int(document["round"]),
            int(document.get("unnamed_missing", 0)),
        )

    def sentence(self) -> str:
        """One line an operator can act on, e.g. for the run's final summary and its report."""
        phase = self.phase if self.round is None else f"{self.phase} round {self.round}"
        count = max(self.needed - len(self.missing) - self.unnamed, 0)
        reached = f"{count} of {self.needed}" if self.needed else "no"
        reasons = [f"{site}: {reason}" for site, reason in sorted(self.missing.items())]
        if self.unnamed:
            reasons.append(f"{self.unnamed} more site(s) that never joined")
        why = "; ".join(reasons)
        text = f"{phase} reached {reached} sites (missing {why})"
        if self.spent:
            text += f"; spent a DP release on results the run lost: {', '.join(self.spent)}"
        return text


def gaps_from_status(status: Mapping[str, Any]) -> list[Gap]:
    """The gaps a ``status.json`` records (none for runs written before gaps were recorded)."""
    return [Gap.from_json(document) for document in status.get("gaps", [])]


def node_name(names: SiteNames, node: int) -> str:
    """A node's site name as it reported it, or ``node-N`` for a site that never did."""
    return names.names.get(node, f"node-{node}")


def missing_sites(
    needed: Iterable[str],
    counted: Iterable[str],
    refusals: Iterable[Refusal],
    *,
    timeout_s: float,
    connected: Iterable[str] | None = None,
) -> dict[str, str]:
    """Each site of ``needed`` whose result did not count, with why: its refusal, not connected,
    or no reply in time (which may have cost it a DP release: ledgers commit before sending)."""
    counted, reasons = set(counted), {refusal.site: refusal.reason for refusal in refusals}
    reachable = None if connected is None else set(connected)
    missing = {}
    for site in sorted(set(needed) - counted):
        if site in reasons:
            missing[site] = reasons[site]
        elif reachable is not None and site not in reachable:
            missing[site] = NOT_CONNECTED
        else:
            missing[site] = f"no reply within {timeout_s:g} s (it may have spent its release)"
    return missing


def training_gaps(history: list[dict[str, Any]], rounds: int, min_sites: int) -> list[Gap]:
    """Rounds 1..``rounds`` that did not reach their quorum (a run normally ends as quorum-lost
    first; this holds the rule for any record a resumed history carries)."""
    trained = {
        int(line["round"]): set(line.get("train", {})) for line in history if "round" in line
    }
    known = set().union(*trained.values())  # every site that trained in some round of the run
    gaps = []
    for server_round in range(1, rounds + 1):
        sites = trained.get(server_round, set())
        if len(sites) >= min_sites:
            continue
        # The sites that trained in other rounds are named; the quorum's rest never joined.
        absent = sorted(known - sites)[: min_sites - len(sites)]
        missing = {site: "did not train in this round (quorum not reached)" for site in absent}
        unnamed = min_sites - len(sites) - len(missing)
        gaps.append(
            Gap(PHASE_TRAINING, missing, needed=min_sites, round=server_round, unnamed=unnamed)
        )
    return gaps


def final_evaluation_gap(
    record: dict[str, Any], needed: Iterable[str], connected: Iterable[str], timeout_s: float
) -> Gap | None:
    """The last round's record against the sites it needed (those that trained in it and every
    site the evaluation was sent to)."""
    needed = sorted(set(needed))
    refusals = [
        Refusal(r["site"], r["phase"], r["reason"])
        for r in record.get("refusals", [])
        if r.get("phase") == "evaluate"
    ]
    missing = missing_sites(
        needed, record.get("evaluate", {}), refusals, timeout_s=timeout_s, connected=connected
    )
    return Gap(PHASE_FINAL_EVALUATION, missing, needed=len(needed)) if missing else None


class RecordingGrid(DelegatingGrid):
    """``inner`` as it is, keeping what each exchange sent and received (for a phase whose own
    code reports only its result, like the feature statistics)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.sent: list[Message] = []
        self.replies: list[Message] = []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.sent, self.replies = self.sent + messages, self.replies + replies
        return replies


def feature_statistics_gap(
    recorded: RecordingGrid, names: SiteNames, *, timeout_s: float, dp: bool
) -> Gap | None:
    """The sites asked for feature statistics whose sums did not count (a site whose reply was
    unusable spent its statistics release under DP)."""
    usable, unusable, refusals = [], [], []
    for reply in recorded.replies:
        site, problem = names.of(reply), reply_problem(reply)
        if problem is None and protocol.ARRAYS not in reply.content.array_records:
            problem = "malformed statistics"
            unusable.append(site)
        if problem is None:
            usable.append(site)
        else:
            refusals.append(Refusal(site, PHASE_FEATURE_STATISTICS, problem))
    needed = [node_name(names, message.metadata.dst_node_id) for message in recorded.sent]
    missing = missing_sites(needed, usable, refusals, timeout_s=timeout_s)
    if not missing:
        return None
    spent = tuple(unusable) if dp else ()
    return Gap(PHASE_FEATURE_STATISTICS, missing, spent, needed=len(needed))
