"""A hospital's own settings (``site.toml``): identity, data, and the privacy policy it enforces.

Example::

    [site]
    name = "st-marys"
    state-dir = "/var/lib/fedscan"      # privacy ledger and last releases: back it up, never delete it
    device = "auto"

    [data]
    dir = "/archive/chest-xray"         # relative paths are relative to this file
    labels-csv = ""                     # default: labels.csv in dir
    key = "path"                        # or SOPInstanceUID | StudyInstanceUID | AccessionNumber | PatientID
    label-column = "label"
    cache-dir = "/var/cache/fedscan"

    [privacy]
    max-epsilon-per-run = 8.0
    max-epsilon-lifetime = 20.0
    delta = 1e-5
    secure-mode = true
    min-samples = 50

The coordinator cannot change any of this: the site checks every request against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.common.cache import default_cache_dir
from fedscan.common.errors import ConfigError
from fedscan.common.tomlfile import read_toml
from fedscan.common.labels import LabelSpec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.sources import FolderSource

_SECTIONS = {
    "site": {"name", "state-dir", "device"},
    "data": {"dir", "labels-csv", "key", "key-column", "label-column", "patient-column", "mask-column", "frames",
             "cache-dir", "decode-workers", "decode-timeout-s", "val-fraction"},
    "privacy": {"max-epsilon-per-run", "max-epsilon-lifetime", "delta", "secure-mode", "min-samples"},
    "coordinator": {"address", "ca-certificate", "insecure", "poll-interval-s"},
    "auth": {"private-key"},
    "logging": {"log-dir"},
}


@dataclass(frozen=True)
class PrivacyPolicy:
    """What the site allows, whatever a run asks for.

    Parameters
    ----------
    max_epsilon_per_run : float
        No run may spend more on this site's data.
    max_epsilon_lifetime : float
        Total over every run the site ever joined (composed by the PRV accountant).
    delta : float, default 1e-5
        The site's δ; a run asking for a larger one is held to this.
    secure_mode : bool, default False
        Force Opacus' floating-point-safe noise, freshly seeded from the OS at every step.
    min_samples : int, default 50
        Refuse to train on fewer training samples (tiny sets make DP noise overwhelming).
    """

    max_epsilon_per_run: float
    max_epsilon_lifetime: float
    delta: float = 1e-5
    secure_mode: bool = False
    min_samples: int = 50

    def __post_init__(self) -> None:
        for name in ("max_epsilon_per_run", "max_epsilon_lifetime"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"privacy.{name.replace('_', '-')} must be a positive number.")
        if self.max_epsilon_lifetime < self.max_epsilon_per_run:
            raise ConfigError("privacy.max-epsilon-lifetime must be at least max-epsilon-per-run.")
        if not 0 < self.delta < 1:
            raise ConfigError("privacy.delta must be in (0, 1), e.g. 1e-5.")
        if self.min_samples < 1:
            raise ConfigError("privacy.min-samples must be at least 1.")

    @classmethod
    def for_simulation(cls, privacy: PrivacyConfig) -> "PrivacyPolicy":
        """Simulated sites accept the run's own target; their ledger lives in the run directory."""
        return cls(max_epsilon_per_run=privacy.epsilon, max_epsilon_lifetime=math.inf,
                   delta=privacy.delta, secure_mode=privacy.secure_mode, min_samples=1)


@dataclass(frozen=True)
class Connection:
    """How a site reaches its coordinator: the Fleet address, the CA it trusts, its own key."""

    address: str
    ca_certificate: Path | None
    private_key: Path | None
    insecure: bool = False
    poll_interval_s: float = 0.5  # how often an idle site asks the coordinator for work (Flower: 3 s)


@dataclass(frozen=True)
class SiteConfig:
    name: str
    state_dir: Path
    data: FolderSource
    policy: PrivacyPolicy
    device: str = "auto"
    connection: Connection | None = None  # None: the site only simulates or checks its data
    log_dir: Path | None = None


def load_site_config(path: Path) -> SiteConfig:
    """Read and validate ``site.toml``; every problem is a ConfigError naming the key."""
    path = Path(path).expanduser()
    document = read_toml(path, "site")
    _check_keys(document, path)
    base = path.parent
    site, data, privacy = (document.get(name, {}) for name in ("site", "data", "privacy"))
    name = _required(site, "site", "name")
    return SiteConfig(
        name=str(name), state_dir=_path(base, _required(site, "site", "state-dir")),
        data=_folder_source(str(name), data, base),
        policy=PrivacyPolicy(
            max_epsilon_per_run=float(_required(privacy, "privacy", "max-epsilon-per-run")),
            max_epsilon_lifetime=float(_required(privacy, "privacy", "max-epsilon-lifetime")),
            delta=float(privacy.get("delta", 1e-5)), secure_mode=bool(privacy.get("secure-mode", False)),
            min_samples=int(privacy.get("min-samples", 50))),
        device=str(site.get("device", "auto")),
        connection=_connection(document, base),
        log_dir=_path(base, document["logging"]["log-dir"]) if document.get("logging", {}).get("log-dir") else None)


def _connection(document: dict[str, Any], base: Path) -> Connection | None:
    coordinator, auth = document.get("coordinator"), document.get("auth", {})
    if coordinator is None:
        return None
    insecure = bool(coordinator.get("insecure", False))
    if not insecure and not coordinator.get("ca-certificate"):
        raise ConfigError("site configuration: [coordinator] ca-certificate is required (the federation's ca.crt); "
                          "only a local experiment may set insecure = true instead.")
    if not insecure and not auth.get("private-key"):
        raise ConfigError("site configuration: [auth] private-key is required (make one with "
                          "`fedscan certs site NAME`).")
    return Connection(address=str(_required(coordinator, "coordinator", "address")),
                      ca_certificate=_path(base, coordinator["ca-certificate"]) if coordinator.get("ca-certificate")
                      else None,
                      private_key=_path(base, auth["private-key"]) if auth.get("private-key") else None,
                      insecure=insecure, poll_interval_s=_poll_interval(coordinator))


def _poll_interval(coordinator: dict[str, Any]) -> float:
    value = float(coordinator.get("poll-interval-s", 0.5))
    if not 0.05 <= value <= 60:
        raise ConfigError("[coordinator] poll-interval-s must be between 0.05 and 60 seconds.")
    return value


def _check_keys(document: dict[str, Any], path: Path) -> None:
    for section, values in document.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; expected {', '.join(sorted(_SECTIONS))}.")
        unknown = sorted(set(values) - _SECTIONS[section])
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [{section}]: {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(_SECTIONS[section]))}.")


def _required(section: dict[str, Any], name: str, key: str) -> Any:
    if key not in section or section[key] in ("", None):
        raise ConfigError(f"site configuration: [{name}] {key} is required.")
    return section[key]


def _path(base: Path, value: Any) -> Path:
    return (base / Path(str(value)).expanduser()).resolve()


def _folder_source(name: str, data: dict[str, Any], base: Path) -> FolderSource:
    labels = LabelSpec(csv=str(_path(base, data["labels-csv"])) if data.get("labels-csv") else "",
                       key=str(data.get("key", "path")), key_column=str(data.get("key-column", "")),
                       label_column=str(data.get("label-column", "label")),
                       patient_column=str(data.get("patient-column", "")),
                       mask_column=str(data.get("mask-column", "mask")))
    return FolderSource(name=name, site_dir=str(_path(base, _required(data, "data", "dir"))), labels=labels,
                        frames=str(data.get("frames", "middle")),
                        cache_dir=str(_path(base, data["cache-dir"])) if data.get("cache-dir") else default_cache_dir(),
                        workers=int(data.get("decode-workers", 2)),
                        decode_timeout_s=float(data.get("decode-timeout-s", 60.0)),
                        val_fraction=float(data.get("val-fraction", 0.25)))
