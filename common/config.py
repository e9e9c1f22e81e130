"""Run configuration: one frozen, validated object, flattened for the run config and for messages.

Config flows one way: CLI options, ``run.toml`` or ``[tool.flwr.app.config]`` → the flat kebab-case
run config → :meth:`RunConfig.from_flat` → RunConfig → :meth:`RunConfig.to_message`, the flat
settings every site receives → :meth:`~fedscan.common.site_settings.SiteSettings.from_message`
at the site. Keys, types, defaults
and meanings live on the dataclass fields (:func:`fedscan.common.settings.setting`); keys a run
leaves out take the defaults of its task (:data:`fedscan.common.defaults.TASK_DEFAULTS`). No path
is ever sent to a site: of the starting weights (``init-weights``) only their SHA-256 is, so each
site's approval covers them. Imports no torch: ``fedscan run`` and ``fedscan status`` start
without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fedscan import __version__
from fedscan.common import defaults, protocol
from fedscan.common.errors import ConfigError
from fedscan.common.models.registry import MODELS, get_model_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.run_checks import check_run
from fedscan.common.settings import (
    UNLESS_DEFAULT,
    Key,
    coerce,
    flatten,
    keys_of,
    nest,
    omitted_defaults,
    setting,
)
from fedscan.common.tasks import SEGMENTATION
from fedscan.common.training_settings import TrainSettings, check_training

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedavgm", "median", "trimmed-mean", "krum")
FlatValue = bool | int | float | str
# Run-config keys that say where a run is written or simulated, not how it trains (set by the
# launcher).
IGNORED_FLAT_KEYS = (
    protocol.RUNS_DIR,
    protocol.RUN_ID,
    protocol.SIMULATION_SITES,
    protocol.SIMULATION_STATE_DIR,
    protocol.SIMULATION_METRICS,
    protocol.DEVICE,
    protocol.RESUME,
)


def _wired(*, factory: Any) -> Any:
    """A nested settings field sent to every site."""
    return field(default_factory=factory, metadata={"wire": True})


@dataclass(frozen=True)
class RunConfig:
    """Everything the coordinator decides for a run."""

    rounds: int = setting(defaults.ROUNDS, wire=True, help="Federated rounds.")
    min_sites: int = setting(
        2, help="Sites that must train in every round (≥ 2); a round with fewer ends the run."
    )
    strategy: str = setting(
        defaults.STRATEGY,
        wire=UNLESS_DEFAULT,  # sent when not FedAvg: a site's [policy] may allow only some
        help="Aggregation: " + " | ".join(STRATEGIES) + ".",
    )
    proximal_mu: float = setting(0.01, help="FedProx: weight of the proximal term.")
    server_learning_rate: float = setting(
        0.05, help="FedAdam: the server optimiser's learning rate."
    )
    server_momentum: float = setting(
        defaults.SERVER_MOMENTUM,
        omit_default=True,
        help="FedAvgM: the server's momentum β in [0, 1) (each round steps by the averaged "
        "update plus β × the previous step).",
    )
    trim_fraction: float = setting(
        0.2, help="Trimmed mean: the share cut from each end, per parameter."
    )
    byzantine_sites: int = setting(
        1,
        help="Krum: how many sites may be malicious (Multi-Krum averages the "
        "n − f most central updates).",
    )
    norm_gate: float = setting(
        10.0,
        help="Refuse updates whose norm exceeds this × the round's median "
        "(0 = off; needs ≥ 3 updates).",
    )
    round_timeout_s: float = setting(900.0, help="Seconds a round waits for the sites' replies.")
    join_timeout_s: float = setting(
        300.0, help="Seconds to wait for min-sites connected sites before each round."
    )
    central_noise_multiplier: float = setting(
        0.0,
        wire=UNLESS_DEFAULT,  # sent when on: a site's [policy] may require it
        help="Central (site-level) DP on the FedAvg aggregate: noise multiplier σ; 0 = off.",
    )
    central_clip_norm: float = setting(
        defaults.CENTRAL_CLIP_NORM,
        wire=UNLESS_DEFAULT,  # under secure aggregation each site clips its own update to it
        help="Central DP: the L2 bound on one site's update.",
    )
    central_delta: float = setting(1e-5, help="Central DP: δ; keep it below 1/(number of sites).")
    seed: int = setting(
        defaults.SEED,
        wire=True,
        help="Seed of the initial model, node sampling and (without DP) the sites' shuffling.",
    )
    operating_point: str = setting(
        "youden",
        omit_default=True,
        help="How the stored threshold is chosen on the pooled validation histogram: youden "
        "(max sensitivity + specificity − 1) or sensitivity:T, the highest threshold that keeps "
        "sensitivity ≥ T there (e.g. sensitivity:0.90: on held-out sites it kept 0.90–0.92; see "
        "docs/accuracy.md).",
    )
    cross_site: bool = setting(
        True,
        wire=True,
        help="After the last round: a local DP fine-tune at each site "
        "(one more release) and every model evaluated at every site (default: the "
        "task's: true for classification, false for segmentation).",
    )
    tensorboard: bool = setting(
        False, help="Also write TensorBoard event files into the run directory."
    )
    secure_aggregation: bool = setting(
        False,
        omit_default=True,  # earlier runs' forms, and sites' approvals of them, stay as they were
        wire=UNLESS_DEFAULT,  # sent when on: a site's [policy] may require it
        help="Secure aggregation (common/secagg): the coordinator learns only the weighted sum of "
        "the sites' updates, never one update (fedavg, fedprox or fedadam; with central DP each "
        "site clips its own update to central-clip-norm; cross-site off, its default then).",
    )
    init_weights: str = setting(
        "",
        path=True,
        omit_default=True,
        help="Start round 1 from these weights instead of random ones (`fedscan run/simulate "
        "--init`): an earlier run's final.pt (runs/<id>/final.pt) or a PyTorch/MONAI state dict "
        "(torch.save of a dict of tensors). Read by the coordinator only; parameters are taken by "
        "name and shape, the others (e.g. a head with another class count) keep the seed's.",
    )
    init_weights_sha256: str = setting(
        "",
        omit_default=True,
        wire=UNLESS_DEFAULT,  # sent when set: a site's approval covers the starting weights
        help="The SHA-256 of init-weights, recorded when the coordinator first reads the file "
        "(set it to pin the file: other content is refused); sent to every site, whose "
        "`fedscan client runs` shows it.",
    )
    train: TrainSettings = _wired(factory=TrainSettings)
    privacy: PrivacyConfig = _wired(factory=PrivacyConfig)

    def __post_init__(self) -> None:
        # One seed per run: the sites' (non-DP) shuffling follows the run's seed.
        if self.train.seed != self.seed:
            object.__setattr__(self, "train", replace(self.train, seed=self.seed))
        get_model_spec(self.train.model)  # raises with the list of valid names
        if self.rounds < 1:
            raise ConfigError("rounds must be at least 1.")
        if self.min_sites < 2:
            raise ConfigError("A federation needs at least 2 sites; set min_sites >= 2.")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}."
            )
        check_training(self.train)
        if self.train.task == SEGMENTATION and self.cross_site:
            raise ConfigError(
                "Cross-site validation ranks classifiers (one AUC, or macro AUC, per model and "
                "site); for task segmentation set cross-site = false (`fedscan simulate --task "
                "segmentation` does)."
            )
        check_run(self)

    @property
    def central_dp(self) -> bool:
        """Server-side (site-level) DP on the aggregate, on top of each site's DP-SGD."""
        return self.central_noise_multiplier > 0

    @property
    def secure_update_bound(self) -> float:
        """The L2 bound each site clips its update to under secure aggregation."""
        return update_bound(self.central_noise_multiplier, self.central_clip_norm)

    def to_message(self) -> dict[str, FlatValue]:
        """The flat settings every site receives (no paths, nothing site-specific)."""
        return {protocol.VERSION: __version__, **flatten(self, wire_only=True)}

    def to_flat(self) -> dict[str, FlatValue]:
        """Every coordinator setting as flat kebab-case keys (Flower run config form)."""
        return flatten(self)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], *, base: Path | None = None) -> RunConfig:
        """Inverse of :meth:`to_flat`; missing keys take (the task's) defaults, unknown keys are
        refused; relative paths are taken from ``base`` (the folder of the file that sets them)
        when given."""
        keys = {key.name: key for key in keys_of(cls, flat_only=True)}
        unknown = sorted(set(flat) - set(keys) - set(IGNORED_FLAT_KEYS))
        if unknown:
            raise ConfigError(
                f"Unknown run configuration keys: {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(keys))}."
            )
        given = {name: value for name, value in flat.items() if name in keys}
        by_task = task_defaults(str(flat.get(_TASK_KEY, "classification")))
        model = str(given.get(_MODEL_KEY, by_task.get(_MODEL_KEY, defaults.MODEL)))
        # Precedence: what the run sets, then the model's own defaults, then the task's.
        merged = {**by_task, **model_defaults(model), **_secure_defaults(given), **given}
        return cls(
            **nest(
                cls,
                {
                    keys[name].path: coerce(value, keys[name], what=name, base=base)
                    for name, value in merged.items()
                },
            )
        )

    @classmethod
    def from_options(cls, **options: Any) -> RunConfig:
        """A run from settings named like their keys in snake_case (``rounds=3``,
        ``learning_rate=0.1``,
        ``dp=False``), ``None`` meaning "not given": what a command line collects, through
        :meth:`from_flat`."""
        names = {key.name.replace("-", "_"): key.name for key in keys_of(cls, flat_only=True)}
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"Unknown run settings: {', '.join(unknown)}.")
        return cls.from_flat(
            {names[name]: value for name, value in options.items() if value is not None},
            base=Path.cwd(),  # a path typed on a command line is relative to where it was typed
        )

    def to_json(self) -> dict[str, Any]:
        document = {"fedscan_version": __version__, **asdict(self)}
        for key in omitted_defaults(RunConfig):  # as to_flat: unset later additions stay out
            *parents, name = key.path
            section = document
            for parent in parents:
                section = section[parent]
            if section[name] == key.spec.default:
                del section[name]
        return document


_TASK_KEY = protocol.config_key("task")
_MODEL_KEY = protocol.config_key("model")
_BATCH_KEY = protocol.config_key("batch_size")
_RATE_KEY = protocol.config_key("learning_rate")
_EPOCHS_KEY = protocol.config_key("local_epochs")


def model_defaults(model: str) -> dict[str, FlatValue]:
    """The flat keys whose default depends on the model (a 3-D model's batch size, learning rate
    and local epochs); none for an unknown model (validation names it)."""
    spec = MODELS.get(model)
    if spec is None:
        return {}
    chosen = {
        _BATCH_KEY: spec.batch_size,
        _RATE_KEY: spec.learning_rate,
        _EPOCHS_KEY: spec.local_epochs,
    }
    return {key: value for key, value in chosen.items() if value}


def task_defaults(task: str) -> dict[str, FlatValue]:
    """The flat keys whose default depends on ``task`` (none for an unknown task: validation names
    it)."""
    chosen = defaults.TASK_DEFAULTS.get(task)
    return {} if chosen is None else _flat_defaults(chosen)


def _flat_defaults(chosen: Any) -> dict[str, FlatValue]:
    """A defaults dataclass as flat run-config keys."""
    return {
        protocol.config_key(spec.name): getattr(chosen, spec.name)
        for spec in dataclasses.fields(chosen)
    }


def update_bound(central_noise_multiplier: float, central_clip_norm: float) -> float:
    """The L2 bound a site clips its update (trained − received model) to before secure
    aggregation quantises it: under central DP, central DP's own bound C, which its noise is
    calibrated to (the coordinator cannot clip an update it never sees, so each site does);
    otherwise ``SECURE_UPDATE_BOUND``, which no sane round reaches (see defaults)."""
    return central_clip_norm if central_noise_multiplier > 0 else defaults.SECURE_UPDATE_BOUND


_SECURE_KEY = protocol.config_key("secure_aggregation")


def _secure_defaults(given: Mapping[str, Any]) -> dict[str, FlatValue]:
    """Secure aggregation turns cross-site validation's default off (it releases each site's own
    fine-tuned model); a run that sets cross-site itself is checked instead."""
    on = coerce(given.get(_SECURE_KEY, False), _secure_key(), what=_SECURE_KEY)
    chosen = defaults.SECURE_AGGREGATION_DEFAULTS
    return _flat_defaults(chosen) if on else {}


def _secure_key() -> Key:
    return next(key for key in keys_of(RunConfig, flat_only=True) if key.name == _SECURE_KEY)
