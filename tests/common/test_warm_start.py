"""Warm start: an earlier run's final.pt or a plain state dict loaded into the run's model by name
and shape; the file's SHA-256 recorded in the run config and sent to sites; every unusable file a
one-line error, and no pickle of arbitrary objects ever run."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError, DataError, FedscanError, ModelError
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model
from fedscan.common.models.warm_start import pinned, start_state
from fedscan.common.models.weight_match import IGNORED, LOADED, NEW
from fedscan.common.site_settings import SiteSettings
from fedscan.common.training_settings import TrainSettings

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1" / "run"
MULTICLASS = TrainSettings(task="multiclass", classes=("a", "b", "c", "d"))


@pytest.fixture()
def earlier_run(tmp_path: Path) -> Path:
    """A copy of fedscan 0.1's final.pt and final.json (the fixture is never written)."""
    for name in ("final.pt", "final.json"):
        shutil.copy(FIXTURE_RUN / name, tmp_path / name)
    return tmp_path / "final.pt"


def _warm(path: Path, **settings: object) -> RunConfig:
    return pinned(RunConfig(init_weights=str(path), **settings))  # type: ignore[arg-type]


def test_an_earlier_runs_final_pt_loads_every_parameter(earlier_run: Path) -> None:
    config = _warm(earlier_run)

    state, match = start_state(config)

    saved = torch.load(earlier_run, weights_only=True)
    assert config.init_weights_sha256 == hashlib.sha256(earlier_run.read_bytes()).hexdigest()
    assert match is not None and match.counts() == {LOADED: 14, NEW: 0, IGNORED: 0}
    assert match.source == "fedscan small-cnn of run 20261201-210417-5947b4"
    assert set(state) == set(saved)
    assert all(torch.equal(state[name], saved[name]) for name in saved)


def test_another_head_loads_the_body_and_keeps_the_seeds_head(earlier_run: Path) -> None:
    config = _warm(earlier_run, train=MULTICLASS, cross_site=False)

    state, match = start_state(config)

    saved = torch.load(earlier_run, weights_only=True)
    fresh = build_model("small-cnn", seed=config.seed, outputs=4).state_dict()
    assert match is not None and match.names(NEW) == ("head.weight", "head.bias")
    assert len(match.names(LOADED)) == 12 and not match.names(IGNORED)
    assert torch.equal(state["features.0.weight"], saved["features.0.weight"])
    assert torch.equal(state["head.weight"], fresh["head.weight"])  # 4×1024, random from the seed


def test_a_plain_state_dict_loads_and_its_extra_tensors_are_ignored(tmp_path: Path) -> None:
    weights = build_model("small-cnn", seed=5).state_dict()
    path = tmp_path / "pretrained.pt"
    torch.save({**weights, "old_head.weight": torch.zeros(3, 1024, dtype=torch.float64)}, path)

    state, match = start_state(_warm(path))

    assert match is not None and match.source == "a state dict"
    assert match.names(IGNORED) == ("old_head.weight",) and not match.names(NEW)
    assert torch.equal(state["head.weight"], weights["head.weight"])


def test_weights_of_another_model_are_one_line_naming_the_model_to_set(tmp_path: Path) -> None:
    path = tmp_path / "final.pt"
    save_checkpoint(path, "unet", build_model("unet", seed=0).state_dict(), task="segmentation")

    with pytest.raises(ModelError) as raised:
        start_state(_warm(path))

    assert "\n" not in str(raised.value) and "matches none of the 14 parameters" in str(
        raised.value
    )
    assert "set model = 'unet'" in str(raised.value)


def _text(path: Path) -> None:
    path.write_text("not weights\n")


def _pickled_object(path: Path) -> None:
    canary = path.with_name("ran")

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.mkdir, (str(canary),))

    path.write_bytes(pickle.dumps({"w": Payload()}))


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (_text, "is not a weights file"),
        (_pickled_object, "never unpickles anything but tensors"),
        (lambda path: path.write_bytes(b""), "is not a weights file"),
        (lambda path: torch.save([torch.zeros(2)], path), "holds a list, not a state dict"),
        (lambda path: torch.save({}, path), "holds an empty dict"),
        (
            lambda path: torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, path),
            "epoch, state_dict are not tensors",
        ),
    ],
)
def test_a_foreign_file_is_one_line_and_nothing_in_it_runs(
    tmp_path: Path, write, expected: str
) -> None:
    path = tmp_path / "weights.pt"
    write(path)

    with pytest.raises(DataError) as raised:
        start_state(_warm(path))

    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert "runs/<id>/final.pt" in str(raised.value) or "torch.save" in str(raised.value)
    assert not (tmp_path / "ran").exists()


def test_a_missing_file_or_one_changed_since_it_was_recorded_is_refused(
    tmp_path: Path, earlier_run: Path
) -> None:
    with pytest.raises(ConfigError, match="cannot read .*missing.pt"):
        _warm(tmp_path / "missing.pt")
    config = _warm(earlier_run)
    torch.save(build_model("small-cnn", seed=9).state_dict(), earlier_run)

    with pytest.raises(ConfigError, match="changed since the run recorded it"):
        start_state(config)


def test_the_hash_goes_to_sites_and_the_path_never_does(earlier_run: Path) -> None:
    config = _warm(earlier_run)

    message = config.to_message()

    assert message["init-weights-sha256"] == config.init_weights_sha256
    assert not any(str(earlier_run) == str(value) for value in message.values())
    assert SiteSettings.from_message(message).init_weights_sha256 == config.init_weights_sha256
    assert "init-weights-sha256" not in RunConfig().to_message()  # earlier messages unchanged
    assert SiteSettings.from_message(RunConfig().to_message()).init_weights_sha256 == ""


def test_the_run_config_records_path_and_hash_and_resolves_relative_paths(
    tmp_path: Path, earlier_run: Path
) -> None:
    config = _warm(earlier_run)

    assert RunConfig.from_flat(config.to_flat()) == config  # what --resume continues with
    relative = RunConfig.from_flat({"init-weights": "final.pt"}, base=earlier_run.parent)
    assert relative.init_weights == str(earlier_run)
    assert RunConfig.from_flat({"init-weights": ""}) == RunConfig()  # pyproject's empty default
    assert "init-weights" not in RunConfig().to_flat()


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        ({"init-weights-sha256": "ab" * 32}, "set init-weights too"),
        ({"init-weights": "w.pt", "init-weights-sha256": "xyz"}, "64 lowercase hexadecimal"),
    ],
)
def test_a_recorded_hash_needs_its_file_and_a_hash_shape(flat: dict, expected: str) -> None:
    with pytest.raises(FedscanError, match=expected):
        RunConfig.from_flat(flat)
