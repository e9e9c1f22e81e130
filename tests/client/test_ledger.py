"""The site's privacy ledger: durable, idempotent per round, and ε an independent accountant agrees
with."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant

from fedscan.client.ledger import PrivacyLedger, Release, RunRecord
from fedscan.common.errors import PrivacyError


def release(
    run: str, server_round: int, sigma: float = 1.1, rate: float = 0.125, steps: int = 24
) -> Release:
    return Release(run, server_round, sigma, rate, steps, 1.0, 1e-5, "prv", "fingerprint")


def test_a_round_is_recorded_once_and_survives_reopening(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    ledger.start_run(RunRecord("run-a", 1.1, 8.0, 1e-5, 1.0, 3))
    assert ledger.record(release("run-a", 1)) is True
    assert ledger.record(release("run-a", 1)) is False  # re-sent round: not counted twice
    reopened = PrivacyLedger(tmp_path)
    assert [r.round for r in reopened.releases("run-a")] == [1]
    assert reopened.has_release("run-a", 1) and not reopened.has_release("run-a", 2)


def test_the_first_calibration_of_a_run_wins(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    first = ledger.start_run(RunRecord("run-a", 1.1, 8.0, 1e-5, 1.0, 3))
    again = ledger.start_run(RunRecord("run-a", 0.7, 8.0, 1e-5, 1.0, 3))
    assert first == again and again.noise_multiplier == 1.1


def test_epsilon_matches_a_fresh_accountant_fed_the_recorded_history(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    for run, rounds, sigma in (("run-a", 3, 1.1), ("run-b", 2, 0.9)):
        ledger.start_run(RunRecord(run, sigma, 8.0, 1e-5, 1.0, rounds))
        for server_round in range(1, rounds + 1):
            ledger.record(release(run, server_round, sigma=sigma))
    independent = PRVAccountant()
    for entry in ledger.releases():
        for _ in range(entry.steps):  # step by step, as Opacus counts during training
            independent.step(noise_multiplier=entry.noise_multiplier, sample_rate=entry.sample_rate)
    expected = independent.get_epsilon(delta=1e-5)
    assert ledger.epsilon(1e-5) == pytest.approx(expected, rel=0.01)
    assert ledger.epsilon(1e-5, run_id="run-a") < ledger.epsilon(1e-5)
    assert ledger.epsilon(1e-5, accountant="rdp") >= ledger.epsilon(1e-5) * 0.99


def test_an_unreadable_ledger_stops_training_with_a_code(tmp_path: Path) -> None:
    (tmp_path / "privacy-ledger.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(PrivacyError) as raised:
        PrivacyLedger(tmp_path)
    assert raised.value.code == "ledger-corrupt"
