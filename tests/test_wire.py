"""Array records packed for the wire: exact round trips, fewer objects, and both ends of a real
exchange (the site answers packed when asked packed, and refuses a packing that does not fit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedscan import wire
from fedscan.client.app import make_client_app
from fedscan.client.audit import AuditLog
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from tests.helpers import instruction, node_context, site_resolver


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d, another dtype
        "empty": np.zeros((0, 3), dtype=np.float32),
        "head.bias": rng.normal(size=(2,)),  # float64
        "mask": rng.random(5) > 0.5,
        "big-endian": np.arange(6, dtype=">i4").reshape(2, 3),
    }


@pytest.mark.parametrize("seed", range(5))
def test_unpacking_gives_back_every_array_bit_for_bit_in_order(seed: int) -> None:
    named = _arrays(seed)
    buffer, layout = wire.pack_arrays(named)
    back = wire.unpack_arrays(buffer, layout)
    assert list(back) == list(named)
    for name, array in named.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert back[name].tobytes() == array.tobytes()


def test_a_layout_that_does_not_fit_the_buffer_is_an_error() -> None:
    buffer, layout = wire.pack_arrays(_arrays(0))
    with pytest.raises(ValueError):
        wire.unpack_arrays(buffer[:-4], layout)
    with pytest.raises(ValueError):
        wire.unpack_arrays(np.concatenate([buffer, buffer[:4]]), layout)


def test_a_packed_message_is_a_few_objects_and_unpacks_to_the_same_content() -> None:
    model = build_model("small-cnn", seed=0).state_dict()
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(model),
            protocol.CONFIG: ConfigRecord({"x": 1}),
            protocol.METRICS: MetricRecord({"loss": 0.5}),
        }
    )
    packed = wire.pack(content)
    assert wire.is_packed(packed) and not wire.is_packed(content)
    assert len(get_all_nested_objects(packed)) <= 8 < 30 <= len(get_all_nested_objects(content))
    back = wire.unpack(packed)
    assert list(back) == list(content)
    assert back[protocol.CONFIG] == content[protocol.CONFIG]
    restored = back.array_records[protocol.ARRAYS].to_torch_state_dict()
    assert list(restored) == list(model)
    assert all(restored[k].equal(model[k]) for k in model)
    assert wire.pack(
        RecordDict({protocol.CONFIG: ConfigRecord({"x": 1})})
    ).config_records.keys() == {protocol.CONFIG}


@pytest.fixture()
def client(synthetic_sites: list[Path], tmp_path: Path):
    sources = [FolderSource(f"site-{i}", str(p)) for i, p in enumerate(synthetic_sites)]
    return make_client_app(site_resolver(sources, tmp_path / "state"), device="cpu")


def _train_request(packed: bool, *, break_layout: bool = False) -> object:
    config = RunConfig(
        rounds=2,
        train=TrainSettings(local_epochs=1, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    content = RecordDict(
        {
            protocol.ARRAYS: ArrayRecord(build_model(config.train.model, seed=0).state_dict()),
            protocol.CONFIG: ConfigRecord({**config.to_message(), protocol.SERVER_ROUND: 1}),
        }
    )
    if packed:
        content = wire.pack(content)
    if break_layout:
        record = content.array_records[protocol.ARRAYS]
        content[protocol.ARRAYS] = ArrayRecord(
            {protocol.PACKED: Array(record[protocol.PACKED].numpy()[:-8])}
        )
    return instruction(content, "train")


def test_the_site_answers_a_packed_request_packed(client) -> None:
    reply = client(_train_request(True), node_context(100, 0))
    assert not reply.has_error() and wire.is_packed(reply.content)
    update = wire.unpack(reply.content).array_records[protocol.ARRAYS]
    plain = client(_train_request(False), node_context(100, 1))
    assert not wire.is_packed(plain.content)
    expected = plain.content.array_records[protocol.ARRAYS]
    assert list(update) == list(expected)
    assert all(update[k].shape == expected[k].shape for k in expected)


def test_a_packing_that_does_not_fit_is_refused_with_a_model_error(client, tmp_path: Path) -> None:
    reply = client(_train_request(True, break_layout=True), node_context(100, 0))
    assert reply.has_error() and reply.error.code == 4003
    audited = AuditLog(tmp_path / "state" / "site-0").entries()
    assert [e["event"] for e in audited] == ["request", "reply"]
    assert audited[-1]["code"] == "model-error"
