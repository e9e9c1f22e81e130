"""Honest run states: ``completed`` only when every phase reached every site it needed, otherwise
``completed-with-gaps`` with each gap named — in status.json, the report, the model card, the
events, ``fedscan status`` — and never resumable."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode as FlowerErrorCode

from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ResumeError
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.coverage import (
    PHASE_CROSS_SITE_EVALUATION,
    PHASE_TRAINING,
    Gap,
    final_evaluation_gap,
    missing_sites,
    training_gaps,
)
from fedscan.server.launch import describe_state
from fedscan.server.resume import resumable_config
from fedscan.server.rundir import MODEL_CARD_FILE, REPORT_FILE, RunDirectory
from fedscan.server.triage import Refusal
from tests.helpers import LoopbackGrid, site_resolver

SITES = ("site-0", "site-1", "site-2")


class LosesCrossSiteReplies(LoopbackGrid):
    """The loopback federation, except that the cross-site evaluation replies of ``lost`` nodes
    never arrive (as when a site drops off after its fine-tune)."""

    lost = (101, 102)  # site-1, site-2

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if messages and messages[0].metadata.message_type == "evaluate.cross_site":
            replies = [r for r in replies if r.metadata.src_node_id not in self.lost]
        return replies


def test_a_run_whose_cross_site_phase_loses_sites_completes_with_gaps(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: 3 DP sites, 1 round; site-1 and site-2 fine-tune (a release each), then vanish.
    sources = [FolderSource(name, str(p)) for name, p in zip(SITES, synthetic_sites, strict=True)]
    app = make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")
    config = RunConfig(
        rounds=1,
        min_sites=3,
        round_timeout_s=30.0,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    # Execute
    result = run_federation(
        LosesCrossSiteReplies(app, 3), config, RunDirectory.create(tmp_path / "runs")
    )
    # Assert: the state, the gap with its sites, reasons and spent releases, in status.json.
    run_dir = result.run_dir
    status = run_dir.read_status()
    assert status["state"] == "completed-with-gaps" and status["rounds"] == 1
    assert [Gap.from_json(g) for g in status["gaps"]] == list(result.gaps)
    (gap,) = result.gaps
    assert gap.phase == PHASE_CROSS_SITE_EVALUATION and gap.needed == 3
    assert sorted(gap.missing) == ["site-1", "site-2"]
    assert all(reason.startswith("no reply within 30 s") for reason in gap.missing.values())
    assert gap.spent == SITES  # every local model's row misses two sites
    # The report and the model card say so; so do `fedscan status` and the events.
    page = (run_dir.path / REPORT_FILE).read_text()
    assert "completed-with-gaps: the results below miss sites" in page
    assert "cross-site evaluation reached 1 of 3 sites" in page
    card = (run_dir.path / MODEL_CARD_FILE).read_text()
    assert "status: completed-with-gaps" in card
    assert "- Gap: cross-site evaluation reached 1 of 3 sites (missing site-1: no reply" in card
    assert "spent a DP release on results the run lost: site-0, site-1, site-2" in card
    assert describe_state(status) == "completed-with-gaps"
    events = [event["event"] for event in run_dir.read_events()]
    assert events[:2] == ["round-training", "round-aggregated"]
    assert events[-3:] == ["cross-site-evaluation", "cross-site-evaluated", "report-written"]
    assert run_dir.read_events()[-2]["done"] == 1
    # Nothing to resume: its rounds are done and its releases spent.
    with pytest.raises(ResumeError, match="already completed"):
        resumable_config(run_dir)


def test_missing_sites_gives_each_site_its_reason() -> None:
    refusals = [Refusal("b", "evaluate", "privacy-budget-exhausted: no budget left")]
    missing = missing_sites(
        ["a", "b", "c", "d"], ["a"], refusals, timeout_s=60.0, connected=["a", "b", "c"]
    )
    assert missing == {
        "b": "privacy-budget-exhausted: no budget left",
        "c": "no reply within 60 s (it may have spent its release)",
        "d": "not connected",
    }


def test_the_final_evaluation_needs_every_site_that_trained_in_the_last_round() -> None:
    record = {"round": 3, "train": {"a": {}, "b": {}}, "evaluate": {"a": {}}}
    gap = final_evaluation_gap(record, ["a", "b"], ["a"], 10.0)
    assert gap is not None and gap.missing == {"b": "not connected"} and gap.needed == 2
    complete = {"round": 3, "train": {"a": {}}, "evaluate": {"a": {}}}
    assert final_evaluation_gap(complete, ["a"], ["a"], 10.0) is None


def test_a_training_round_below_its_quorum_is_a_gap_and_one_at_quorum_is_not() -> None:
    history = [{"round": 1, "train": {"a": {}, "b": {}}}, {"round": 2, "train": {"a": {}}}]
    (gap,) = training_gaps(history, rounds=2, min_sites=2)
    assert (gap.phase, gap.round, gap.needed) == (PHASE_TRAINING, 2, 2)
    assert set(gap.missing) == {"b"} and gap.unnamed == 0  # named: it trained in round 1
    assert training_gaps(history[:1], rounds=1, min_sites=2) == []
    (short,) = training_gaps(history[:1], rounds=1, min_sites=3)
    assert short.missing == {} and short.unnamed == 1  # no site name invented for it
    assert "reached 2 of 3 sites" in short.sentence() and "1 more site(s)" in short.sentence()
    assert Gap.from_json(short.to_json()) == short


def test_a_gap_reads_back_from_json_and_reads_as_one_sentence() -> None:
    gap = Gap("cross-site fine-tune", {"b": "not connected"}, ("a",), needed=2)
    assert Gap.from_json(json.loads(json.dumps(gap.to_json()))) == gap
    assert gap.sentence() == (
        "cross-site fine-tune reached 1 of 2 sites (missing b: not connected); "
        "spent a DP release on results the run lost: a"
    )


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ({"state": "starting"}, "starting"),
        ({"state": "running", "phase": "waiting-for-sites", "connected": 1, "needed": 3},
         "waiting-for-sites (1 of 3)"),
        ({"state": "running", "phase": "round", "round": 2, "rounds": 5}, "round 2 of 5"),
        ({"state": "running", "phase": "cross-site-validation"}, "cross-site-validation"),
        ({"state": "running"}, "running"),  # a ServerApp older than phases
        ({}, "unknown"),
    ],
)  # fmt: skip
def test_fedscan_status_says_what_a_run_is_doing(status: dict, shown: str) -> None:
    assert describe_state(status) == shown


class DropsOneModel(LoopbackGrid):
    """The loopback federation, except that node 101's cross-site reply leaves one model out."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if messages and messages[0].metadata.message_type == "evaluate.cross_site":
            for reply in replies:
                if reply.metadata.src_node_id == 101:
                    records = reply.content.metric_records
                    del records[next(iter(records))]
        return replies


def test_a_site_that_evaluated_only_some_models_is_a_gap(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: the global and 3 local models; site-1 leaves one of the 4 out of its reply.
    sources = [FolderSource(name, str(p)) for name, p in zip(SITES, synthetic_sites, strict=True)]
    app = make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")
    config = RunConfig(
        rounds=1,
        min_sites=3,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(enabled=False),
    )
    # Execute
    result = run_federation(DropsOneModel(app, 3), config, RunDirectory.create(tmp_path / "runs"))
    # Assert: its hole in the matrix makes the run completed-with-gaps, naming site-1 and why.
    assert result.run_dir.read_status()["state"] == "completed-with-gaps"
    (gap,) = result.gaps
    assert gap.phase == PHASE_CROSS_SITE_EVALUATION and gap.missing == {"site-1": "3 of 4 models"}


def test_a_site_that_never_replied_is_named_as_the_operator_registered_it(tmp_path: Path) -> None:
    from fedscan.server.site_registry import SITES_FILE, names_by_node

    (tmp_path / SITES_FILE).write_text(
        json.dumps({"st-marys": {"node_id": "1337", "key": "ab12"}, "north": {"node_id": "7"}})
    )
    assert names_by_node(tmp_path) == {1337: "st-marys", 7: "north"}
    (tmp_path / SITES_FILE).write_text("{not json")
    assert names_by_node(tmp_path) == {} and names_by_node(tmp_path / "absent") == {}


class FirstRoundUnavailable(LoopbackGrid):
    """The loopback federation, except that round 1's first train exchange comes back "Node
    Unavailable" from every site (a restarted coordinator whose sites are still reconnecting):
    the sites did train and release, and must replay that release when the round is sent again."""

    failed = 0

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if messages and messages[0].metadata.message_type == "train" and not self.failed:
            self.failed = len(replies)
            error = Error(code=FlowerErrorCode.NODE_UNAVAILABLE, reason="Error: Node Unavailable")
            return [Message(error, reply_to=message) for message in messages]
        return replies


def test_a_round_that_found_its_sites_unavailable_is_sent_again_and_spends_nothing_twice(
    flower_identity, synthetic_sites: list[Path], tmp_path: Path
) -> None:
    sources = [FolderSource(name, str(p)) for name, p in zip(SITES, synthetic_sites, strict=True)]
    app = make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")
    config = RunConfig(
        rounds=1,
        min_sites=3,
        cross_site=False,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    grid = FirstRoundUnavailable(app, 3)
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    assert grid.failed == 3 and result.run_dir.read_status()["state"] == "completed"
    (line,) = result.history
    assert sorted(line["train"]) == list(SITES)
    events = [e["event"] for e in result.run_dir.read_events()]
    assert events.count("round-training") == 2 and "round-resent" in events
    for name in SITES:  # one release each: the resent round replayed the stored update
        ledger = PrivacyLedger(tmp_path / "state" / name)
        assert len(ledger.releases(result.run_dir.run_id)) == 2  # the round and the count
