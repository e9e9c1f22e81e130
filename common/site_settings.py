"""A run's settings as a site receives them with every request: the wire form of
:meth:`fedscan.common.config.RunConfig.to_message`, parsed and validated by
:meth:`SiteSettings.from_message`. A key the coordinator left out is at its default only where
the run configuration allows that on the wire; any other missing key is refused by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedscan.common import defaults, protocol
from fedscan.common.config import RunConfig, update_bound
from fedscan.common.errors import ConfigError
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.settings import Key, coerce, nest, optional_on_the_wire, wire_keys
from fedscan.common.training_settings import TrainSettings, check_training


def _read(key: Key, value: Any) -> Any:
    return coerce(value, key, what=key.name)


@dataclass(frozen=True)
class SiteSettings:
    """A run's settings as a site receives them with every request
    (:meth:`RunConfig.to_message`)."""

    train: TrainSettings
    privacy: PrivacyConfig
    rounds: int
    cross_site: bool
    strategy: str = defaults.STRATEGY  # how the coordinator aggregates (for the site's policy)
    central_noise_multiplier: float = 0.0  # central DP on the aggregate; 0: off
    central_clip_norm: float = defaults.CENTRAL_CLIP_NORM  # its bound on one site's update
    init_weights_sha256: str = ""  # the starting weights' SHA-256; empty: random (the run's seed)
    secure_aggregation: bool = False  # only the sum of the updates reaches the coordinator

    @property
    def secure_update_bound(self) -> float:
        """The L2 bound this site clips its update to under secure aggregation."""
        return update_bound(self.central_noise_multiplier, self.central_clip_norm)

    @classmethod
    def from_message(cls, config: Mapping[str, Any]) -> SiteSettings:
        """Parse and validate a request's settings; ConfigError names a missing or invalid key."""
        found: dict[tuple[str, ...], Any] = {}
        for key in wire_keys(RunConfig):
            if key.name not in config and optional_on_the_wire(key):
                continue  # at its default: the dataclass's own
            if key.name not in config:
                raise ConfigError(f"The coordinator's configuration lacks {key.name!r}.")
            found[key.path] = _read(key, config[key.name])
        found[("train", "seed")] = found[("seed",)]
        found[("train", "proximal_mu")] = float(config.get(protocol.PROXIMAL_MU, 0.0))
        values = nest(RunConfig, found)
        settings = cls(
            **{
                spec.name: values[spec.name]
                for spec in dataclasses.fields(cls)
                if spec.name in values
            }
        )
        get_model_spec(settings.train.model)
        check_training(settings.train)
        return settings
