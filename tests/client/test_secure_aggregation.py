"""A site under secure aggregation: its train reply holds no update, its round's secrets wait on
its own disk (0600), and its [policy] may require secure aggregation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedscan.client import secure_aggregation
from fedscan.client.app import make_client_app
from fedscan.client.ledger import PrivacyLedger
from fedscan.client.run_policy import RunPolicy
from fedscan.client.site import Site
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import REPLY_CODES, ErrorCode
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.site_settings import SiteSettings
from fedscan.common.training_settings import TrainSettings
from tests.helpers import OPEN_POLICY, instruction, node_context

FAST = TrainSettings(local_epochs=1, batch_size=8, augment=False)
PRIVATE = PrivacyConfig(epsilon=8.0, delta=1e-4)


def _site(sites: list[Path], state: Path, run_policy: RunPolicy | None = None) -> Site:
    source = FolderSource("site-0", str(sites[0]))
    return Site(source, state, OPEN_POLICY, run_policy=run_policy or RunPolicy())


def _train(config: RunConfig, run_id: str = "run-s") -> object:
    settings = {**config.to_message(), protocol.SERVER_ROUND: 1, protocol.RUN_ID: run_id}
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(build_model("small-cnn", seed=0).state_dict()),
            protocol.CONFIG: ConfigRecord(settings),
        }
    )
    return instruction(content, "train", node_id=100)


def test_a_secure_train_reply_holds_keys_and_metrics_but_no_update(
    synthetic_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare
    site = _site(synthetic_sites, tmp_path / "state")
    client = make_client_app(lambda context: site, device="cpu")
    config = RunConfig(train=FAST, privacy=PRIVATE, secure_aggregation=True, cross_site=False)
    # Execute
    reply = client(_train(config), node_context(100, 0))
    # Assert: keys, metrics and the site record leave; the update does not
    assert not reply.has_error()
    assert dict(reply.content.array_records) == {}
    assert set(reply.content.config_records) == {protocol.SECAGG, protocol.SITE}
    advert = reply.content.config_records[protocol.SECAGG]
    assert advert[protocol.SECAGG_SITE_ID] == "100"
    assert {
        len(advert[k]) for k in (protocol.SECAGG_ENCRYPTION_KEY, protocol.SECAGG_MASKING_KEY)
    } == {32}
    assert set(reply.content.metric_records) == {protocol.METRICS}
    # The release is in the ledger before anything left; the held secrets are the site's only
    assert [r.round for r in PrivacyLedger(site.state_dir).releases("run-s")][-1] == 1
    (held,) = (site.state_dir / secure_aggregation.SECAGG_DIR).iterdir()
    assert stat.S_IMODE(held.stat().st_mode) == 0o600


def test_a_site_that_requires_secure_aggregation_refuses_a_run_without_it(
    synthetic_sites: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = _site(synthetic_sites, tmp_path / "state", RunPolicy(require_secure_aggregation=True))
    client = make_client_app(lambda context: site, device="cpu")
    plain = RunConfig(train=FAST, privacy=PRIVATE, cross_site=False)
    reply = client(_train(plain, "run-p"), node_context(100, 0))
    assert reply.has_error()
    assert reply.error.code == REPLY_CODES[ErrorCode.POLICY_REFUSED][0]
    assert "secure aggregation 'off'" in caplog.text
    assert PrivacyLedger(site.state_dir).releases("run-p") == []


def test_the_setting_reaches_the_site_only_when_on() -> None:
    assert protocol.config_key("secure_aggregation") not in RunConfig().to_message()
    on = RunConfig(secure_aggregation=True, cross_site=False).to_message()
    settings = SiteSettings.from_message(on)
    assert settings.secure_aggregation
    assert RunPolicy(require_secure_aggregation=True).broken_rule(settings, "0.1.0") is None
