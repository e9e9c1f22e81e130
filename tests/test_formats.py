"""Files and messages written by fedscan 0.1 (tests/fixtures/v0_1) still load and still match.

Hospitals keep ledgers, stored releases and decode caches across upgrades; coordinators keep run
directories and checkpoints; a site and a coordinator on the same major.minor exchange the same
messages. These tests read what the old code wrote, with the current code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from flwr.app import Message

from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.releases import load_release
from fedscan.client.site import SiteResolver
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.defaults import AUGMENT_LOADER
from fedscan.common.errors import REPLY_CODES
from fedscan.common.ingest.cache import DecodeCache, settings_key
from fedscan.common.ingest.dicom import DecodeOptions
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.ingest.scan import IngestSettings, ingest_site
from fedscan.common.metrics.crosssite import CrossSiteMatrix
from fedscan.common.models.checkpoint import load_checkpoint
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.app import run_federation
from fedscan.server.inprocess import InProcessGrid
from fedscan.server.report import build_report
from fedscan.server.resume import resumable_config
from fedscan.server.round_checkpoint import load_latest
from fedscan.server.rundir import RunDirectory
from tests.helpers import COARSE_POLICY, site_resolver

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"
RUN = FIXTURES / "run"
RUN_ID = "20261201-210417-5947b4"


def _copy_run(tmp_path: Path) -> RunDirectory:
    shutil.copytree(RUN, tmp_path / RUN_ID)
    return RunDirectory(tmp_path / RUN_ID, RUN_ID)


def test_an_old_run_directory_reads_back_and_reports(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    assert run_dir.read_status()["state"] == "completed"
    history = run_dir.read_metrics()
    assert [line["round"] for line in history] == [1, 2]
    config = RunConfig.from_flat(run_dir.read_run_config())
    stored = json.loads((RUN / "config.json").read_text())
    assert {k: v for k, v in config.to_json().items() if k != "fedscan_version"} == {
        k: v for k, v in stored.items() if k != "fedscan_version"
    }
    matrix = CrossSiteMatrix.from_json(json.loads((RUN / "cross_site.json").read_text()))
    assert matrix.models == ("global", "local:site-0", "local:site-1")
    report, card = build_report(run_dir.path)
    assert report.stat().st_size > 10_000 and "site-0" in card.read_text()


def test_an_old_round_checkpoint_resumes_with_the_final_weights(tmp_path: Path) -> None:
    run_dir = _copy_run(tmp_path)
    checkpoint = load_latest(run_dir.path)
    assert checkpoint is not None and checkpoint.round == 2
    model, meta = load_checkpoint(run_dir.path / "final.pt")
    final = model.state_dict()
    assert all(torch.equal(checkpoint.arrays[key], final[key]) for key in final)
    assert meta["threshold"] == json.loads((RUN / "histograms.json").read_text())["threshold"]
    run_dir.write_status("failed", reason="killed")  # a run that died can be resumed
    assert (
        resumable_config(run_dir).to_flat()
        == RunConfig.from_flat(run_dir.read_run_config()).to_flat()
    )


def test_an_old_ledger_and_stored_release_keep_their_spend(tmp_path: Path) -> None:
    state = tmp_path / "site-0"
    shutil.copytree(RUN / "sites" / "site-0", state)
    ledger = PrivacyLedger(state)
    (run,) = ledger.runs()
    assert run.run_id == RUN_ID and run.planned_rounds == 3
    assert [release.round for release in ledger.releases(RUN_ID)] == [1, 2, 3]
    reported = json.loads((RUN / "cross_site.json").read_text())["epsilon"]["site-0"]
    assert ledger.epsilon(run.delta, run_id=RUN_ID) == pytest.approx(reported, rel=1e-9)
    stored = load_release(state, RUN_ID, 3)
    assert stored is not None and stored[1]["epsilon"] == pytest.approx(reported, rel=1e-9)


def test_an_old_decode_cache_is_hit_for_every_file(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "cache", tmp_path / "cache")
    settings = IngestSettings(64, DecodeOptions(), cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "cache" / settings_key(settings.decode, 64)).is_dir()
    samples, report = ingest_site(FIXTURES / "cachesite", LabelSpec(), settings)
    assert report.cache["hits"] == 3 and report.cache["misses"] == 0
    assert report.accepted == 2 and report.rejected_by_reason() == {"NOT_DICOM": 1}
    assert samples.images.shape == (2, 1, 64, 64)
    assert DecodeCache(tmp_path / "cache", settings_key(settings.decode, 64)).stats.hits == 0


def test_configuration_forms_are_unchanged() -> None:
    stored = json.loads((FIXTURES / "configs.json").read_text())
    assert RunConfig().to_flat() == stored["default_flat"]
    assert {k: v for k, v in RunConfig().to_message().items() if k != "fedscan-version"} == stored[
        "default_message"
    ]
    assert RunConfig.from_flat({"task": "segmentation"}).to_flat() == stored["segmentation_flat"]
    assert {k: v for k, v in RunConfig().to_json().items() if k != "fedscan_version"} == stored[
        "default_json"
    ]
    # Every 0.1 code keeps its number and reason; codes added since take numbers of their own.
    codes = {str(code): list(reply) for code, reply in REPLY_CODES.items()}
    assert {code: codes.get(code) for code in stored["reply_codes"]} == stored["reply_codes"]
    numbers = [number for number, _ in REPLY_CODES.values()]
    assert len(set(numbers)) == len(numbers)


def _shape(message: Message) -> dict:
    shape = {}
    for name, record in message.content.items():
        kind = type(record).__name__
        shape[name] = {
            "kind": kind,
            **({} if kind == "ArrayRecord" else {"keys": sorted(record.keys())}),
        }
    return shape


class _RecordingGrid(InProcessGrid):
    """Notes the shape of every message both ways, as the capture at 8a71df7 did."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.log: list[dict] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.log += [
            {"direction": "to-site", "type": m.metadata.message_type, "content": _shape(m)}
            for m in messages
        ]
        for reply in replies:
            entry = {"direction": "from-site", "type": reply.metadata.message_type}
            entry.update(
                {"error": [reply.error.code, reply.error.reason]}
                if reply.has_error()
                else {"content": _shape(reply)}
            )
            self.log.append(entry)
        return replies


def _distinct(log: list[dict]) -> list[dict]:
    seen: set[str] = set()
    return [
        entry
        for entry in log
        if (key := json.dumps(entry, sort_keys=True)) not in seen and not seen.add(key)
    ]


@pytest.fixture(scope="module")
def capture_sites(tmp_path_factory: pytest.TempPathFactory) -> list[FolderSource]:
    """The capture's two sites, decoded once for the three federations."""
    root = tmp_path_factory.mktemp("capture")
    sites = generate_sites(root / "sites", SynthConfig(sites=2, images_per_site=24, seed=2))
    return [
        FolderSource(f"site-{i}", str(path), cache_dir=str(root / "cache"))
        for i, path in enumerate(sites)
    ]


@pytest.mark.parametrize("kind", ["classification", "classical", "segmentation"])
def test_messages_have_the_shapes_they_had(
    kind: str, capture_sites: list[FolderSource], flower_identity, tmp_path: Path
) -> None:
    fast = {"local_epochs": 1, "batch_size": 8, "augment": False}
    privacy = PrivacyConfig(epsilon=8.0, delta=1e-4)
    config = {
        "classification": RunConfig(
            rounds=2, min_sites=2, train=TrainSettings(**fast), privacy=privacy
        ),
        "classical": RunConfig(
            rounds=1,
            min_sites=2,
            cross_site=False,
            privacy=privacy,
            train=TrainSettings(model="hog-logreg", **fast),
        ),
        "segmentation": RunConfig(
            rounds=1,
            min_sites=2,
            cross_site=False,
            privacy=privacy,
            train=TrainSettings(model="unet", task="segmentation", learning_rate=0.1, **fast),
        ),
    }[kind]
    grid = _RecordingGrid(make_client_app(_coarse_sites(capture_sites, tmp_path), device="cpu"), 2)
    run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    then = json.loads((FIXTURES / "messages.json").read_text())[kind]
    assert _distinct(grid.log) == [_with_metric_policy(entry) for entry in then]


def _coarse_sites(sources: list[FolderSource], tmp_path: Path) -> SiteResolver:
    """Sites under ``[privacy] metrics = "coarse"``: the metric policy whose messages carry 0.1's
    keys (its histograms have 26 bins, not 0.1's 1 000; the others send DP releases)."""
    policies = [COARSE_POLICY] * len(sources)
    return site_resolver(sources, tmp_path / "state", policies)


def _with_metric_policy(entry: dict) -> dict:
    """0.1's message with what fedscan added since: a reply that carries an evaluation names the
    site's metric policy in its site record (issue 24)."""
    content = entry["content"]
    evaluated = entry["direction"] == "from-site" and (
        entry["type"] != "train" or "evaluation" in content
    )
    if not evaluated or "site" not in content or entry["type"].startswith("query"):
        return entry
    site = content["site"]
    keys = sorted([*site["keys"], "metrics-policy"])
    return {**entry, "content": {**content, "site": {**site, "keys": keys}}}


def test_without_dp_the_same_seed_trains_what_0_1_trained(
    capture_sites: list[FolderSource], flower_identity, tmp_path: Path
) -> None:
    stored = json.loads((FIXTURES / "training.json").read_text())
    # 0.1 augmented per image in the loader; batched augmentation (the default since 2026-12-07)
    # draws another random stream, so a seeded run of 0.1 is reproduced with augment-on = loader.
    config = RunConfig.from_flat({**stored["config"], "augment-on": AUGMENT_LOADER})
    grid = InProcessGrid(make_client_app(_coarse_sites(capture_sites, tmp_path), device="cpu"), 2)
    result = run_federation(grid, config, RunDirectory.create(tmp_path / "runs"))
    exact = ("loss", "num-examples", "positives")  # figures the coarse bins leave unchanged
    # Losses are float32 means: one differed by 5.5e-6 relative on a loaded machine and 3.7e-5 on
    # a fresh clone (2026-12-02), so metrics get 1e-4; the weights below keep their tolerance.
    for now, then in zip(result.history, stored["history"], strict=True):
        # The pooled figures come from score histograms, binned in logit steps since issue 21:
        # 0.1's 0.001-wide linear bins tied this model's scores near 0.99 (pooled AUC 0.667 then,
        # 0.717 now, threshold 0.988 then). The same images were pooled; the exact per-site
        # figures below still match.
        # Since issue 24 a site sends coarse histograms (26 bins) at best, and its own AUC-like
        # figures from them: the counts and losses below still match 0.1's exactly.
        for key in ("n", "positives"):
            assert now["pooled"][key] == then["pooled"][key]
        for key in ("loss", "num-examples"):
            assert now["aggregated"][key] == pytest.approx(then["aggregated"][key], rel=1e-4)
        for site, metrics in then["evaluate"].items():
            assert {k: v for k, v in now["evaluate"][site].items() if k in exact} == pytest.approx(
                {k: v for k, v in metrics.items() if k in exact}, rel=1e-4, nan_ok=True
            )
    # Weights differ across CPUs too: on another Xeon (2026-12-06) the code that had passed CI
    # trained weights 1.1e-4 and layer sums 5.4e-4 away at most (float32 kernels add in another
    # order), while seed 1 instead of 0 moves a site's AUC from 0.67 to 0.83 and its loss by 2.7.
    weights = torch.load(result.final_model, weights_only=True)
    for name, values in stored["weights"].items():
        tensor = weights[name].double()
        assert tensor.flatten()[:8].tolist() + [float(tensor.sum())] == pytest.approx(
            values, rel=1e-5, abs=2e-3
        )
