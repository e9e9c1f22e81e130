"""What a site lets a run do beyond its ε: ``site.toml [policy]``, checked before any work.

Invariants:
- A run is judged as a whole, on the settings every request carries: a run that breaks a rule
  is refused at every message, before the site loads its data or spends anything.
- A refusal leaves the site as the coded reply ``policy-refused`` with a fixed public reason;
  which rule, and the run's value, go to the site's own log only.
- Every key has a default that allows what fedscan 0.1 allowed, so a site without ``[policy]``
  behaves as before; unknown keys are errors (``load_site_config``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from fedscan.common import defaults
from fedscan.common.config import STRATEGIES
from fedscan.common.errors import ConfigError, ErrorCode, FedscanError
from fedscan.common.models.registry import MODELS
from fedscan.common.privacy import planned_releases
from fedscan.common.settings import setting
from fedscan.common.site_settings import SiteSettings
from fedscan.common.values import Names

log = logging.getLogger(__name__)


class PolicyRefused(FedscanError):
    """The run breaks the site's ``[policy]``."""

    code = ErrorCode.POLICY_REFUSED


@dataclass(frozen=True)
class RunPolicy:
    """``site.toml [policy]``: the runs this site serves."""

    allowed_tasks: Names = setting((), help="Tasks a run may have (empty: any).")
    allowed_models: Names = setting((), help="Models a run may train (empty: any).")
    allowed_strategies: Names = setting(
        (), help="How the coordinator may aggregate: " + " | ".join(STRATEGIES) + " (empty: any)."
    )
    require_central_dp: bool = setting(
        False, help="Refuse runs without central DP on the aggregate (central-noise-multiplier 0)."
    )
    require_secure_aggregation: bool = setting(
        False,
        help="Refuse runs without secure aggregation (the coordinator would see this site's "
        "update, not only the sum).",
    )
    max_rounds: int = setting(0, help="Most rounds a run may have (0: no limit).")
    max_local_epochs: int = setting(0, help="Most local epochs per round (0: no limit).")
    max_releases_per_run: int = setting(
        0,
        help="Most DP releases per run: rounds, plus one for a cross-site fine-tune (0: no limit).",
    )
    allow_cross_site: bool = setting(
        True, help="Whether a run may ask for cross-site validation (a local fine-tune, released)."
    )
    min_fedscan_version: str = setting(
        "", help="The oldest fedscan a coordinator may run (empty: any compatible one)."
    )
    require_approval: bool = setting(
        False,
        help="Train only on runs approved by configuration hash (`fedscan client approve`).",
    )
    auto_approve: bool = setting(
        False,
        help="With require-approval: approve, and record, any run within every rule above.",
    )

    def __post_init__(self) -> None:
        unknown = [t for t in self.allowed_tasks if t not in defaults.TASKS]
        if unknown:
            raise ConfigError(
                f"[policy] allowed-tasks: unknown {unknown}; use {', '.join(defaults.TASKS)}."
            )
        unknown = [m for m in self.allowed_strategies if m not in STRATEGIES]
        if unknown:
            raise ConfigError(
                f"[policy] allowed-strategies: unknown {unknown}; use {', '.join(STRATEGIES)}."
            )
        unknown = [m for m in self.allowed_models if m not in MODELS]
        if unknown:
            raise ConfigError(f"[policy] allowed-models: unknown {unknown}; see docs/reference.md.")
        for name in ("max_rounds", "max_local_epochs", "max_releases_per_run"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"[policy] {name.replace('_', '-')} must be 0 (no limit) or more."
                )
        if self.min_fedscan_version:
            try:
                Version(self.min_fedscan_version)
            except InvalidVersion:
                raise ConfigError(
                    f"[policy] min-fedscan-version {self.min_fedscan_version!r} is not a version "
                    "(e.g. 0.1.0)."
                ) from None

    def broken_rule(self, settings: SiteSettings, coordinator_version: str) -> str | None:
        """The first rule ``settings`` break, in words for the site's log; None if none."""
        train, releases = settings.train, planned_releases(settings.rounds, settings.cross_site)
        checks = (
            (bool(self.allowed_tasks) and train.task not in self.allowed_tasks, "task", train.task),
            (
                bool(self.allowed_models) and train.model not in self.allowed_models,
                "model",
                train.model,
            ),
            (
                bool(self.allowed_strategies) and settings.strategy not in self.allowed_strategies,
                "strategy",
                settings.strategy,
            ),
            (
                self.require_central_dp and settings.central_noise_multiplier <= 0,
                "central DP",
                "off",
            ),
            (
                self.require_secure_aggregation and not settings.secure_aggregation,
                "secure aggregation",
                "off",
            ),
            (_over(settings.rounds, self.max_rounds), "rounds", settings.rounds),
            (_over(train.local_epochs, self.max_local_epochs), "local epochs", train.local_epochs),
            (_over(releases, self.max_releases_per_run), "releases per run", releases),
            (settings.cross_site and not self.allow_cross_site, "cross-site validation", True),
            (_older(coordinator_version, self.min_fedscan_version), "fedscan", coordinator_version),
        )
        return next((f"{what} {value!r}" for broken, what, value in checks if broken), None)

    def check(self, settings: SiteSettings, coordinator_version: str) -> None:
        """Raise :class:`PolicyRefused` for a run that breaks a rule (the detail is logged)."""
        broken = self.broken_rule(settings, coordinator_version)
        if broken is not None:
            raise PolicyRefused(f"The site's [policy] does not allow this run's {broken}.")

    def lines(self) -> list[str]:
        """The policy in force, one rule per line (``fedscan client check``)."""
        limit = lambda n: "no limit" if n == 0 else str(n)  # noqa: E731
        return [
            f"tasks: {', '.join(self.allowed_tasks) or 'any'}",
            f"models: {', '.join(self.allowed_models) or 'any'}",
            f"strategies: {', '.join(self.allowed_strategies) or 'any'}"
            + ("; central DP required" if self.require_central_dp else ""),
            "secure aggregation: "
            + ("required" if self.require_secure_aggregation else "optional"),
            f"rounds: {limit(self.max_rounds)}; local epochs: {limit(self.max_local_epochs)}; "
            f"releases per run: {limit(self.max_releases_per_run)}",
            f"cross-site validation: {'allowed' if self.allow_cross_site else 'refused'}",
            f"coordinator's fedscan: {self.min_fedscan_version or 'any compatible'} or newer",
            "approval: "
            + (
                (
                    "runs within these rules approved automatically"
                    if self.auto_approve
                    else "every run by `fedscan client approve`"
                )
                if self.require_approval
                else "not required"
            ),
        ]


def _over(value: int, limit: int) -> bool:
    return limit > 0 and value > limit


def _older(version: str, minimum: str) -> bool:
    if not minimum:
        return False
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return True
