"""The ClientApp called directly: replies, refusals, privacy invariants, ε across rounds."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedscan.client import replies
from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.releases import save_release
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import REPLY_CODES
from fedscan.common.metrics.binning import COARSE_BINS
from fedscan.common.metrics.histogram import BINS, ScoreHistogram
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from tests.helpers import (
    COARSE_POLICY,
    LOOSE_DELTA_POLICY,
    OPEN_POLICY,
    instruction,
    node_context,
    site_resolver,
)

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def client(synthetic_sites: list[Path], tmp_path: Path):
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites)]
    return make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")


@pytest.fixture()
def coarse_client(synthetic_sites: list[Path], tmp_path: Path):
    """Sites whose policy releases exact coarse histograms (``[privacy] metrics = "coarse"``)."""
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites)]
    coarse = [COARSE_POLICY] * len(sources)
    return make_client_app(site_resolver(sources, tmp_path / "coarse", coarse), device="cpu")


def _request(config: RunConfig, message_type: str, **overrides) -> object:
    settings = {**config.to_message(), **overrides}
    arrays = ArrayRecord(build_model(config.train.model, seed=0).state_dict())
    return instruction(
        RecordDict({"arrays": arrays, "config": ConfigRecord(settings)}), message_type
    )


def test_train_reply_holds_only_arrays_scalar_metrics_and_site_record(client) -> None:
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    reply = client(_request(config, "train", **{"server-round": 1}), node_context(100, 0))
    assert not reply.has_error()
    content = reply.content
    assert set(content.array_records) == {"arrays"} and set(content.metric_records) == {"metrics"}
    assert set(content.config_records) == {"site"}
    metrics = content["metrics"]
    assert 0 < metrics["epsilon"] <= 8.0
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_the_training_count_is_released_once_per_run_noised_and_in_the_ledger(
    client, coarse_client, tmp_path: Path
) -> None:
    # Setup
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    context = node_context(100, 0)
    # Execute
    sent = [
        client(_request(config, "train", **{"server-round": r}), context).content["metrics"]
        for r in (1, 2)
    ]
    exact = coarse_client(_request(config, "train", **{"server-round": 1}), context)
    # Assert: one noisy value (σ = 10 images) for the whole run, its release a ledger row
    assert sent[0]["num-examples"] == sent[1]["num-examples"] >= 1
    assert abs(sent[0]["num-examples"] - 30) <= 60
    rows = PrivacyLedger(tmp_path / "state" / "site-0").releases()
    assert [row.round for row in rows] == [-1, 1, 2] and rows[0].noise_multiplier == 10.0
    assert sent[1]["epsilon"] <= 8.0 * 1.001  # the count was planned into the run's noise
    assert exact.content["metrics"]["num-examples"] == 30  # metrics = "coarse": exact


def test_nothing_identifying_leaves_the_site(client, synthetic_sites: list[Path]) -> None:
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    context = node_context(100, 0)
    replies = [
        client(_request(config, kind, **{"server-round": 1}), context)
        for kind in ("train", "evaluate")
    ]
    wire = b"".join(
        pickle.dumps((dict(r.content.metric_records), dict(r.content.config_records)))
        for r in replies
    )
    headers = [
        pydicom.dcmread(p, stop_before_pixels=True)
        for p in sorted(synthetic_sites[0].glob("*.dcm"))[:20]
    ]
    secrets = (
        [str(synthetic_sites[0])]
        + [str(h.PatientName) for h in headers]
        + [h.PatientID for h in headers]
    )
    secrets += [h.AccessionNumber for h in headers] + [str(h.SOPInstanceUID) for h in headers]
    for secret in secrets:
        assert secret.encode() not in wire


def test_epsilon_grows_across_rounds_and_budget_is_enforced(client) -> None:
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=4.0, delta=1e-4))
    context = node_context(100, 0)
    spent = []
    for server_round in (1, 2, 3):  # 2 rounds + the local fine-tune of cross-site validation
        reply = client(_request(config, "train", **{"server-round": server_round}), context)
        spent.append(reply.content["metrics"]["epsilon"])
    assert 0 < spent[0] < spent[1] < spent[2] <= 4.0 * 1.001
    extra = client(_request(config, "train", **{"server-round": 4}), context)  # beyond the plan
    assert extra.has_error() and extra.error.code == REPLY_CODES["privacy-budget-exhausted"][0]


def test_incompatible_coordinator_version_is_refused_with_a_code(client) -> None:
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(delta=1e-4))
    reply = client(_request(config, "train", **{"fedscan-version": "9.0.0"}), node_context(100, 0))
    assert reply.has_error() and reply.error.code == REPLY_CODES["version-mismatch"][0]
    assert reply.error.reason.startswith("version-mismatch:")


def test_delta_too_large_for_the_site_is_refused(synthetic_sites: list[Path], tmp_path) -> None:
    sources = [FolderSource("site-0", str(synthetic_sites[0]))]
    loose = site_resolver(sources, tmp_path / "state", [LOOSE_DELTA_POLICY])
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(delta=0.2))
    reply = make_client_app(loose, device="cpu")(_request(config, "train"), node_context(100, 0))
    assert reply.error.code == REPLY_CODES["delta-too-large"][0]


def test_unexpected_failure_sends_no_local_details(synthetic_sites: list[Path]) -> None:
    def broken(context):
        raise RuntimeError(f"cannot open {synthetic_sites[0]}/IM00001.dcm")

    reply = make_client_app(broken, device="cpu")(
        _request(RunConfig(train=FAST), "evaluate"), node_context(100, 0)
    )
    assert reply.has_error() and str(synthetic_sites[0]) not in reply.error.reason


def test_training_without_dp_must_be_explicit_and_reports_infinite_epsilon(client) -> None:
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(enabled=False))
    assert config.to_message()["dp"] is False
    reply = client(_request(config, "train"), node_context(100, 0))
    assert not reply.has_error()
    assert reply.content["metrics"]["epsilon"] == float("inf")
    assert reply.content["metrics"]["noise-multiplier"] == 0.0


def test_a_site_with_no_usable_image_refuses_without_naming_its_files(tmp_path: Path) -> None:
    site = tmp_path / "st-secret-hospital"
    site.mkdir()
    (site / "patient-jane-doe.dcm").write_bytes(b"garbage")
    (site / "labels.csv").write_text("file,label\npatient-jane-doe.dcm,1\n")
    app = make_client_app(
        site_resolver([FolderSource("site-x", str(site))], tmp_path / "state"), device="cpu"
    )
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    reply = app(_request(config, "train", **{"server-round": 1}), node_context(7, 0))
    assert reply.has_error() and reply.error.reason.startswith("data-error:")
    assert "secret" not in reply.error.reason and "jane" not in reply.error.reason


def test_a_round_asked_for_twice_is_answered_from_the_stored_release(
    client, tmp_path: Path
) -> None:
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    first = client(
        _request(config, "train", **{"server-round": 1, "run-id": "r1"}), node_context(100, 0)
    )
    again = client(
        _request(config, "train", **{"server-round": 1, "run-id": "r1"}), node_context(100, 0)
    )
    assert not first.has_error() and not again.has_error()
    for key, value in first.content["arrays"].to_torch_state_dict().items():
        assert torch.equal(value, again.content["arrays"].to_torch_state_dict()[key])
    assert again.content["metrics"]["epsilon"] == first.content["metrics"]["epsilon"]
    assert len(PrivacyLedger(tmp_path / "state" / "site-0").releases("r1")) == 2  # + the count


def test_kill_9_mid_round_loses_no_release_and_counts_none_twice(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    command = [sys.executable, "-m", "tests.site_process", str(synthetic_sites[0]), str(state)]
    site = subprocess.Popen(
        [*command, "1", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    seen = [site.stdout.readline() for _ in range(3)]  # start 1, round 1, start 2
    assert seen[2].strip() == "start 2", seen
    # Mid-round 2: its training has begun (4 local epochs, ≥ 0.3 s here), nothing is released yet.
    # A fixed sleep missed the round once rounds took 0.5 s rather than 3-4 s.
    for _ in range(200):  # bounded: the site logs about ten lines a round
        line = site.stderr.readline()
        assert line, "the site ended before round 2 trained"
        if "Round 2: training on" in line:
            break
    else:
        pytest.fail("round 2 never started training")
    site.send_signal(signal.SIGKILL)
    site.wait()
    before = PrivacyLedger(state / "site-k").epsilon(1e-4, run_id="crash-run")
    restarted = subprocess.run(
        [*command, "2", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    results = [json.loads(seen[1])] + [
        json.loads(line) for line in restarted.stdout.splitlines() if line.startswith("{")
    ]
    epsilons = [r["epsilon"] for r in results]
    ledger = PrivacyLedger(state / "site-k")
    assert [r.round for r in ledger.releases("crash-run")] == [
        -1,
        1,
        2,
        3,
        4,
    ]  # -1: the run's noised training count (client/counts.py)
    assert epsilons == sorted(epsilons) and epsilons[0] <= before <= epsilons[1]
    assert (
        ledger.epsilon(1e-4, run_id="crash-run") == pytest.approx(epsilons[-1])
        and epsilons[-1] <= 8.0 * 1.001
    )


def test_evaluate_reply_carries_a_noised_coarse_histogram_by_default(client) -> None:
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    final = _request(config, "evaluate", **{"server-round": 1})  # the run's final evaluation
    reply = client(final, node_context(100, 0))
    metrics = reply.content["metrics"]
    assert len(metrics["dp-hist-pos"]) == len(metrics["dp-hist-neg"]) == COARSE_BINS
    assert "hist-pos" not in metrics and metrics["dp-noise-std"] > 0
    assert not all(float(v).is_integer() for v in metrics["dp-hist-pos"])  # noise was added
    noisy = sum(metrics["dp-hist-pos"]) + sum(metrics["dp-hist-neg"])
    assert metrics["num-examples"] == max(round(noisy), 1)  # from the noisy counts only
    assert reply.content.config_records["site"]["metrics-policy"] == "dp"
    assert 0 < metrics["metrics-epsilon"] <= OPEN_POLICY.max_epsilon_metrics_per_run


def test_a_coarse_site_sends_its_exact_coarse_histogram(coarse_client) -> None:
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    metrics = coarse_client(_request(config, "evaluate"), node_context(100, 0)).content["metrics"]
    assert len(metrics["hist-pos"]) == len(metrics["hist-score-sum"]) == COARSE_BINS
    assert sum(metrics["hist-pos"]) == metrics["positives"]
    assert sum(metrics["hist-pos"]) + sum(metrics["hist-neg"]) == metrics["num-examples"]


def test_a_train_reply_scores_the_received_model_first_only_when_asked(coarse_client) -> None:
    client = coarse_client
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    context = node_context(100, 0)
    plain = client(_request(config, "train", **{"server-round": 1}), context)
    assert set(plain.content.metric_records) == {"metrics"}
    asked = client(
        _request(config, "train", **{"server-round": 2, "evaluate-first": True}), context
    )
    evaluation = asked.content.metric_records["evaluation"]
    direct = client(_request(config, "evaluate"), context).content[
        "metrics"
    ]  # the same model, evaluated alone
    assert evaluation["auc"] == direct["auc"] and evaluation["hist-pos"] == direct["hist-pos"]
    assert set(evaluation) <= protocol.EVALUATE_METRICS | set(protocol.HISTOGRAM_KEYS)


def test_cross_site_evaluation_answers_for_exactly_the_models_sent(coarse_client) -> None:
    client = coarse_client
    config = RunConfig(rounds=1, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    models = {
        name: ArrayRecord(build_model(config.train.model, seed=seed).state_dict())
        for seed, name in enumerate(("global", "local:site-1"))
    }
    request = instruction(
        RecordDict({"config": ConfigRecord(config.to_message()), **models}), "evaluate.cross_site"
    )
    reply = client(request, node_context(100, 0))
    assert set(reply.content.metric_records) == set(models) and not reply.content.array_records
    for record in reply.content.metric_records.values():
        assert (
            0 <= record["auc"] <= 1
            and sum(record["hist-pos"]) + sum(record["hist-neg"]) == record["num-examples"]
        )
    assert (  # two models, two sets of scores (an untrained model's fit in one coarse bin)
        reply.content.metric_records["global"]["hist-score-sum"]
        != reply.content.metric_records["local:site-1"]["hist-score-sum"]
    )
    histogram = ScoreHistogram.of(np.array([0.2]), np.array([1]))
    with pytest.raises(replies.ReplyRefused, match="exactly the models"):
        replies.cross_site_reply(request, {"global": ({"auc": 0.9}, histogram)}, "site-0")


def test_the_allow_list_refuses_unknown_metrics_and_malformed_histograms() -> None:
    request = _request(RunConfig(train=FAST), "evaluate")
    with pytest.raises(replies.ReplyRefused, match="allow-list"):
        replies.evaluate_reply(request, {"patient-age": 71.0}, "site-0")
    with pytest.raises(replies.ReplyRefused, match="wrong length"):
        replies.evaluate_reply(
            request, {"auc": 0.9}, "site-0", histogram=ScoreHistogram.empty(bins=2)
        )
    negative = ScoreHistogram(np.zeros(BINS, np.int64), np.full(BINS, -1), np.zeros(BINS))
    with pytest.raises(replies.ReplyRefused, match="non-negative integer"):
        replies.evaluate_reply(request, {"auc": 0.9}, "site-0", histogram=negative)


def test_a_stored_update_the_ledger_never_recorded_is_not_sent(client, tmp_path: Path) -> None:
    # A crash between storing an update and committing it: that update never left the site.
    config = RunConfig(rounds=2, train=FAST, privacy=PrivacyConfig(epsilon=8.0, delta=1e-4))
    state = tmp_path / "state" / "site-0"
    save_release(state, "r9", 1, {"bogus": torch.zeros(1)}, {"epsilon": 0.0})
    reply = client(
        _request(config, "train", **{"server-round": 1, "run-id": "r9"}), node_context(100, 0)
    )
    assert not reply.has_error() and "bogus" not in reply.content["arrays"]
    assert [r.round for r in PrivacyLedger(state).releases("r9")] == [
        -1,
        1,
    ]  # -1: the run's noised training count (client/counts.py)
