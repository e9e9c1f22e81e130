"""``fedscan run``'s end: the final metrics always, every gap, and one exit code per outcome —
0 completed, 3 completed with gaps, 1 failed, 2 when following stopped (with the resume command
only when the coordinator is gone). Submission and following are replaced: no Flower here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fedscan.cli.console import EXIT_PARTIAL
from fedscan.cli.display import RoundTable, event_line
from fedscan.cli.main import app
from fedscan.cli.summary import print_summary
from fedscan.common.config import RunConfig
from fedscan.common.errors import FedscanError
from fedscan.server import follow as following
from fedscan.server import launch
from fedscan.server.follow import COORDINATOR_GONE, STILL_GOING
from fedscan.server.rundir import RunDirectory

runner = CliRunner()
FINAL = {
    "round": 1,
    "aggregated": {"loss": 0.4},
    "pooled": {"auc": 0.812, "auc-ci-low": 0.7, "auc-ci-high": 0.9, "threshold": 0.5},
    "epsilon": {"site-0": 1.5},
    "elapsed_s": 12.0,
}
GAP = {
    "phase": "cross-site evaluation",
    "needed": 3,
    "missing": {"site-1": "no reply within 600 s", "site-2": "no reply within 600 s"},
    "spent_dp_release": ["site-1", "site-2"],
}


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, outcome: Any) -> Any:
    """``fedscan run`` on a fake run directory holding one round; ``outcome`` is the final status
    follow() returns, or the error it raises."""
    run_dir = RunDirectory.create(tmp_path, "r1")
    run_dir.append_metrics(FINAL)
    request = launch.RunRequest(coordinator=None, run=RunConfig())  # type: ignore[arg-type]

    def follow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # the round was never fed: the summary reads it itself

    monkeypatch.setattr(launch, "load_run_request", lambda path, init_weights=None: request)
    monkeypatch.setattr(launch, "submit", lambda request, resume_id: (run_dir, 7))
    monkeypatch.setattr(following, "follow", follow)
    return runner.invoke(app, ["run", "--config", str(tmp_path / "run.toml")])


def test_a_completed_run_prints_its_final_metrics_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = _run(monkeypatch, tmp_path, {"state": "completed", "rounds": 1})
    assert result.exit_code == 0, result.output
    assert "Final (round 1): pooled validation AUC 0.812" in result.output
    assert "Run r1 completed" in result.output and "gap" not in result.output


def test_a_run_with_gaps_names_them_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status = {"state": "completed-with-gaps", "rounds": 1, "gaps": [GAP]}
    result = _run(monkeypatch, tmp_path, status)
    assert result.exit_code == EXIT_PARTIAL == 3, result.output
    assert "AUC 0.812" in result.output and "Run r1 completed-with-gaps" in result.output
    assert "gap: cross-site evaluation reached 1 of 3 sites (missing site-1: no reply" in (
        result.output.replace("\n", " ")
    )


def test_a_failed_run_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = _run(monkeypatch, tmp_path, {"state": "failed", "reason": "quorum-lost"})
    assert result.exit_code == 1 and "quorum-lost" in result.output


def test_the_resume_command_is_offered_only_when_the_coordinator_is_gone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = _run(monkeypatch, tmp_path / "a", FedscanError("gone", code=COORDINATOR_GONE))
    assert gone.exit_code == 2 and "--resume r1" in gone.output
    going = _run(monkeypatch, tmp_path / "b", FedscanError("still going", code=STILL_GOING))
    assert going.exit_code == 2 and "still going" in going.output
    assert "--resume" not in going.output


def test_a_simulation_with_gaps_ends_with_exit_3_after_its_summary(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    summary = {
        "state": "completed-with-gaps",
        "gaps": [GAP],
        "final": FINAL,
        "epsilon_target": 8.0,
        "central_delta": 1e-5,
        "run_dir": str(tmp_path),
        "wall_s": 3.0,
        "final_model": str(tmp_path / "final.pt"),
    }
    with pytest.raises(typer.Exit) as raised:
        print_summary(console, summary)
    assert raised.value.exit_code == EXIT_PARTIAL
    text = console.export_text()
    assert "completed-with-gaps" in text and "Report:" in text  # printed in full first


def test_the_round_table_shows_each_round_s_own_duration() -> None:
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=False)
    table = RoundTable(console, ["site-0"])
    table.update(FINAL)
    table.update({**FINAL, "round": 2, "elapsed_s": 20.5})
    lines = console.export_text().splitlines()
    assert lines[0].endswith("round time 12.0 s") and lines[1].endswith("round time 8.5 s")
    table.update({**FINAL, "round": 3, "elapsed_s": 40.0, "train_s": 6.25})  # its own exchange
    assert console.export_text().splitlines()[-1].endswith("round time 6.2 s")


def test_events_read_as_lines_and_unknown_ones_are_not_printed() -> None:
    event = {"event": "waiting-for-sites", "connected": 1, "needed": 3, "time": 0.0}
    assert event_line(event) == "waiting for sites: 1 of 3 connected"
    assert event_line({"event": "round-aggregated", "round": 2, "rounds": 5, "trained": 3}) == (
        "round 2 of 5: aggregated the updates of 3 sites"
    )
    assert event_line({"event": "something-new"}) is None
    assert event_line({"event": "round-training"}) is None  # malformed: no counts
