"""RunConfig: validated on construction, flat for Flower's run config, and back."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedscan.common.config import RunConfig
from fedscan.common.errors import ConfigError, ModelError
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.site_settings import SiteSettings
from fedscan.common.training_settings import TrainSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(),
        RunConfig(
            rounds=7,
            strategy="fedprox",
            proximal_mu=0.1,
            seed=3,
            train=TrainSettings(model="resnet18", learning_rate=0.01, batch_size=16, augment=False),
        ),
        RunConfig(privacy=PrivacyConfig(enabled=False)),
        RunConfig(
            cross_site=False,
            train=TrainSettings(model="unet", task="segmentation", learning_rate=0.3),
        ),
    ],
)
def test_flat_round_trip(config: RunConfig) -> None:
    assert RunConfig.from_flat(config.to_flat()) == config


def test_unknown_keys_and_bad_values_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        RunConfig.from_flat({"roundz": 3})
    with pytest.raises(ModelError, match="small-cnn"):
        RunConfig.from_flat({"model": "vgg"})
    with pytest.raises(ConfigError, match="fedavg"):
        RunConfig(strategy="fedsgd")
    with pytest.raises(ConfigError, match="at least 2"):
        RunConfig(min_sites=1)


def test_sites_receive_settings_only() -> None:
    message = RunConfig().to_message()
    assert message["fedscan-version"]
    assert not any("dir" in key or "path" in key for key in message)


def test_pyproject_run_config_lists_every_setting() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert RunConfig.from_flat(declared) == RunConfig()
    assert set(RunConfig().to_flat()) <= set(declared)


def test_the_task_and_the_model_must_agree_and_segmentation_takes_its_own_defaults() -> None:
    with pytest.raises(ConfigError, match="choose one of: unet"):
        RunConfig(train=TrainSettings(task="segmentation"))
    with pytest.raises(ConfigError, match="choose one of: small-cnn"):
        RunConfig(train=TrainSettings(model="unet"))
    with pytest.raises(ConfigError, match="cross-site = false"):
        RunConfig(train=TrainSettings(model="unet", task="segmentation"))
    with pytest.raises(ConfigError, match="Unknown task 'detection'"):
        RunConfig.from_flat({"task": "detection"})
    segmentation = RunConfig.from_flat({"task": "segmentation"})
    assert (
        segmentation.train.model,
        segmentation.train.learning_rate,
        segmentation.cross_site,
    ) == ("unet", 0.1, False)
    assert (
        RunConfig.from_flat({"task": "segmentation", "learning-rate": 0.02}).train.learning_rate
        == 0.02
    )
    assert segmentation.to_message()["task"] == "segmentation"


def test_simulate_refuses_segmentation_on_an_npz_before_anything_starts(
    tiny_npz: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fedscan.cli.main import app

    result = CliRunner().invoke(
        app,
        ["simulate", "--task", "segmentation", "--data", f"npz:{tiny_npz}", "--out", str(tmp_path)],
    )
    assert result.exit_code == 2 and "npz file holds no masks" in result.output
    assert not any(tmp_path.iterdir())  # no run directory was made


def test_flags_given_as_words_through_flwr_run_config_are_read_as_words() -> None:
    # `flwr run --run-config 'dp="false"'` passes strings; bool("false") would be True.
    config = RunConfig.from_flat(
        {
            "dp": "false",
            "augment": "False",
            "secure-mode": "true",
            "cross-site": "false",
            "tensorboard": "false",
        }
    )
    assert config.privacy.enabled is False and config.train.augment is False
    assert config.privacy.secure_mode is True and config.cross_site is False
    with pytest.raises(ConfigError, match="dp must be true or false"):
        RunConfig.from_flat({"dp": "no"})


def test_a_site_reads_word_flags_in_a_request_the_same_way() -> None:
    message = {
        **RunConfig().to_message(),
        "dp": "false",
        "augment": "false",
        "secure-mode": "false",
    }
    settings = SiteSettings.from_message(message)
    assert settings.privacy.enabled is False and settings.train.augment is False
    with pytest.raises(ConfigError, match="lacks 'epsilon'"):
        SiteSettings.from_message({k: v for k, v in message.items() if k != "epsilon"})


def test_options_left_unset_take_the_defaults_of_the_task_once() -> None:
    segmentation = RunConfig.from_options(task="segmentation", rounds=None, learning_rate=None)
    assert (
        segmentation.train.model,
        segmentation.train.learning_rate,
        segmentation.cross_site,
    ) == ("unet", 0.1, False)
    assert RunConfig.from_options(learning_rate=0.2).train.learning_rate == 0.2
    assert RunConfig.from_options() == RunConfig()
    with pytest.raises(ConfigError, match="Unknown run settings: colour"):
        RunConfig.from_options(colour="red")


def test_the_flat_form_round_trips_and_its_keys_come_from_the_fields() -> None:
    config = RunConfig.from_flat({"rounds": 3, "strategy": "median", "epsilon": 3.0})
    assert RunConfig.from_flat(config.to_flat()) == config
    assert set(config.to_message()) - {"fedscan-version"} < set(config.to_flat())


def test_a_3d_model_brings_its_batch_and_learning_rate_unless_the_run_sets_them() -> None:
    volume = RunConfig.from_options(model="cnn3d").train
    assert (volume.batch_size, volume.learning_rate) == (16, 0.01)
    chosen = RunConfig.from_options(model="cnn3d", batch_size=8, learning_rate=0.2).train
    assert (chosen.batch_size, chosen.learning_rate) == (8, 0.2)
    segmentation = RunConfig.from_options(model="unet3d", task="segmentation").train
    assert (segmentation.batch_size, segmentation.learning_rate) == (16, 0.2)
    assert segmentation.local_epochs == 5 and volume.local_epochs == 3
    assert RunConfig.from_options().train.batch_size == 64  # 2-D models keep the run default
