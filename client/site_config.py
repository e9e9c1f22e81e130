"""A hospital's own settings (``site.toml``): identity, data, and the privacy policy it enforces.

Example::

    [site]
    name = "st-marys"
    state-dir = "/var/lib/fedscan"   # privacy ledger and last releases: back it up, never delete it
    device = "auto"

    [data]
    dir = "/archive/chest-xray"      # relative paths are relative to this file
    labels-csv = ""                  # default: labels.csv in dir
    key = "path"                     # or SOPInstanceUID | StudyInstanceUID | AccessionNumber | …
    label-column = "label"
    cache-dir = "/var/cache/fedscan"

    [privacy]
    max-epsilon-per-run = 8.0
    max-epsilon-lifetime = 40.0
    delta = 1e-5
    secure-mode = true
    min-samples = 20
    metrics = "dp"                   # or "coarse" | "final-only" | "none": what evaluations send
    max-epsilon-metrics-per-run = 4.0

The coordinator cannot change any of this: the site checks every request against it. Every key,
its default and meaning are the fields below (``docs/reference.md`` is generated from them);
unknown sections and keys are errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedscan.client.run_policy import RunPolicy
from fedscan.common import defaults
from fedscan.common.data.sources import FolderSource
from fedscan.common.errors import ConfigError
from fedscan.common.files import read_toml
from fedscan.common.metrics.private import METRIC_POLICIES
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.settings import Section, described, setting


@dataclass(frozen=True)
class PrivacyPolicy:
    """What the site allows, whatever a run asks for."""

    max_epsilon_per_run: float = field(
        metadata=described(help="No run may spend more on this site's data.")
    )
    max_epsilon_lifetime: float = field(
        metadata=described(
            help="Total over every run the site ever joined (composed by the PRV accountant)."
        )
    )
    delta: float = setting(
        1e-5, help="The site's δ; a run asking for a larger one is held to this."
    )
    secure_mode: bool = setting(
        False,
        help="Force Opacus' floating-point-safe noise, freshly seeded from the OS at every step.",
    )
    # 20, not 50: a 60-image pilot site keeps 43-46 for training after the validation split,
    # and 50 refused it. The floor catches a mis-pointed folder; it is no statistical guarantee.
    min_samples: int = setting(
        20, help="Refuse to train on fewer training samples (tiny sets make DP noise overwhelming)."
    )
    metrics: str = setting(
        defaults.METRICS_POLICY,
        help="What evaluations release: dp (noised coarse histograms, in the ledger under their "
        "own budget), coarse (exact coarse histograms, outside any guarantee), final-only (dp, "
        "the last evaluation only), none (nothing but the count 0).",
    )
    max_epsilon_metrics_per_run: float = setting(
        defaults.METRICS_EPSILON,
        help="ε of a run's metric releases on the validation images (dp, final-only): a budget "
        "of its own, since validation and training images are different people.",
    )

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
        if self.metrics not in METRIC_POLICIES:
            raise ConfigError(
                f"privacy.metrics is {self.metrics!r}; use one of {', '.join(METRIC_POLICIES)}."
            )
        if not self.max_epsilon_metrics_per_run > 0:
            raise ConfigError("privacy.max-epsilon-metrics-per-run must be a positive number.")

    @classmethod
    def for_simulation(cls, privacy: PrivacyConfig) -> PrivacyPolicy:
        """Simulated sites accept the run's own target; their ledger lives in the run directory."""
        return cls(
            max_epsilon_per_run=privacy.epsilon,
            max_epsilon_lifetime=math.inf,
            delta=privacy.delta,
            secure_mode=privacy.secure_mode,
            min_samples=1,
        )


@dataclass(frozen=True)
class Connection:
    """How a site reaches its coordinator: the Fleet address, the CA it trusts, its own key."""

    address: str = field(
        metadata=described(
            help="The coordinator's Fleet address, host:9092 (outbound TCP from the site)."
        )
    )
    ca_certificate: Path | None = setting(
        None,
        path=True,
        help="The federation's ca.crt, from the coordinator operator (required unless insecure).",
    )
    private_key: Path | None = setting(
        None,
        path=True,
        help="The site's authentication key, made with "
        "`fedscan certs site NAME` (mode 0600; required unless insecure).",
    )
    insecure: bool = setting(False, help="No TLS and no authentication: a local experiment only.")
    # Flower polls every 3 s; 0.5 s keeps a round's latency down at one small request per poll.
    poll_interval_s: float = setting(
        0.5, help="How often an idle site asks the coordinator for work, seconds (0.05–60)."
    )

    def __post_init__(self) -> None:
        if not self.insecure and self.ca_certificate is None:
            raise ConfigError(
                "site configuration: [coordinator] ca-certificate is required (the federation's "
                "ca.crt); only a local experiment may set insecure = true instead."
            )
        if not self.insecure and self.private_key is None:
            raise ConfigError(
                "site configuration: [auth] private-key is required (make one with "
                "`fedscan certs site NAME`)."
            )
        if not 0.05 <= self.poll_interval_s <= 60:
            raise ConfigError("[coordinator] poll-interval-s must be between 0.05 and 60 seconds.")


@dataclass(frozen=True)
class SiteConfig:
    name: str = field(
        metadata=described(help="The site's name, as the coordinator and the reports show it.")
    )
    state_dir: Path = field(
        metadata=described(
            path=True,
            help="The privacy ledger and last releases: back it up, never delete "
            "it (that would reset the site's budget).",
        )
    )
    data: FolderSource  # [data]
    policy: PrivacyPolicy  # [privacy]
    device: str = setting(
        "auto", help="Where the site trains: auto (CUDA when available) | cpu | cuda."
    )
    # A fresh ClientApp process per message re-imports PyTorch, MONAI and Opacus (≈ 3.5 s on a
    # 2-core host, measured by bench/deployment.py); a fork of one warm process does not.
    warm_clientapp: bool = setting(
        True,
        help="Answer each message in a fork of one process that imported fedscan's stack once "
        "(false: Flower's fresh ClientApp process per message).",
    )
    connection: Connection | None = None  # None: the site only simulates or checks its data
    run_policy: RunPolicy = field(default_factory=RunPolicy)  # [policy]
    log_dir: Path | None = setting(
        None,
        path=True,
        help="Where `fedscan client start` writes supernode.log (default: standard output).",
    )


SITE_SECTIONS = (
    Section("site", SiteConfig, only=("name", "state_dir", "device", "warm_clientapp")),
    Section("data", FolderSource, exclude=("name", "seed")),
    Section("privacy", PrivacyPolicy),
    Section("policy", RunPolicy),
    Section("coordinator", Connection, exclude=("private_key",)),
    Section("auth", Connection, only=("private_key",)),
    Section("logging", SiteConfig, only=("log_dir",)),
)


def load_site_config(path: Path) -> SiteConfig:
    """Read and validate ``site.toml``; every problem is a ConfigError naming the key."""
    path = Path(path).expanduser()
    document = read_toml(path, "site")
    sections = {section.name: section for section in SITE_SECTIONS}
    for name, values in document.items():
        if name not in sections or not isinstance(values, dict):
            raise ConfigError(
                f"{path}: unknown section [{name}]; expected {', '.join(sorted(sections))}."
            )

    def read(name: str) -> dict[str, Any]:
        return sections[name].read(document.get(name, {}), where=str(path), base=path.parent)

    site = read("site")
    return SiteConfig(
        **site,
        data=FolderSource(name=site["name"], **read("data")),
        policy=PrivacyPolicy(**read("privacy")),
        run_policy=RunPolicy(**read("policy")),
        connection=_connection(document, read),
        **read("logging"),
    )


def _connection(document: dict[str, Any], read: Any) -> Connection | None:
    if "coordinator" not in document:
        return None
    return Connection(**read("coordinator"), **read("auth"))
