"""Run configuration: one frozen, validated object, flattened for messages.

Config flows one way: CLI options or ``[tool.flwr.app.config]`` → RunConfig
→ the flat kebab-case dict the coordinator sends to sites each round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from fedscan import __version__
from fedscan.common import defaults
from fedscan.common.compat import VERSION_KEY
from fedscan.common.errors import ConfigError
from fedscan.common.models import TASKS, get_model_spec, models_for
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training import TrainSettings

STRATEGIES = ("fedavg", "fedprox", "fedadam", "median", "trimmed-mean", "krum")
FlatValue = bool | int | float | str
# Run-config keys that describe where a run is written or simulated, not how it trains.
IGNORED_FLAT_KEYS = ("runs-dir", "run-id", "simulation-sites", "device", "resume")
# Message key: score the received model on validation data before training on it (see server/rounds.py).
EVALUATE_FIRST = "evaluate-first"
EVALUATION_RECORD = "evaluation"  # the train reply's record holding that evaluation


@dataclass(frozen=True)
class RunConfig:
    """Everything the coordinator decides for a run."""

    rounds: int = defaults.ROUNDS
    min_sites: int = 2
    strategy: str = defaults.STRATEGY
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.05
    trim_fraction: float = 0.2  # trimmed-mean: the fraction cut from each end, per parameter
    byzantine_sites: int = 1  # krum: how many sites may be malicious (Multi-Krum averages the n − f best)
    norm_gate: float = 10.0  # refuse updates whose norm exceeds this × the round's median (0 = off)
    round_timeout_s: float = 900.0
    join_timeout_s: float = 300.0
    central_noise_multiplier: float = 0.0
    central_clip_norm: float = 1.0
    central_delta: float = 1e-5
    seed: int = 0
    cross_site: bool = True  # after the last round: local DP fine-tune at each site, models × sites matrix
    tensorboard: bool = False  # also write TensorBoard event files into the run directory
    train: TrainSettings = field(default_factory=TrainSettings)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

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
            raise ConfigError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        _check_training(self.train)
        if self.train.task == "segmentation" and self.cross_site:
            raise ConfigError("Cross-site validation ranks classifiers (AUC); for task segmentation set "
                              "cross-site = false (`fedscan simulate --task segmentation` does).")
        _check_robust(self)
        _check_central_dp(self)

    @property
    def central_dp(self) -> bool:
        """Server-side (site-level) DP on the aggregate, on top of each site's DP-SGD."""
        return self.central_noise_multiplier > 0

    def to_message(self) -> dict[str, FlatValue]:
        """The flat settings every site receives (no paths, nothing site-specific)."""
        train, privacy = self.train, self.privacy
        return {
            VERSION_KEY: __version__, "model": train.model, "learning-rate": train.learning_rate,
            "momentum": train.momentum, "local-epochs": train.local_epochs,
            "batch-size": train.batch_size, "augment": train.augment, "seed": self.seed,
            "rounds": self.rounds, "dp": privacy.enabled, "epsilon": privacy.epsilon,
            "delta": privacy.delta, "clip-norm": privacy.clip_norm, "secure-mode": privacy.secure_mode,
            "cross-site": self.cross_site, "classical": train.classical, "task": train.task,
        }

    def to_flat(self) -> dict[str, FlatValue]:
        """Every coordinator setting as flat kebab-case keys (Flower run config form)."""
        flat = {key: value for key, value in self.to_message().items() if key != VERSION_KEY}
        flat.update({"min-sites": self.min_sites, "strategy": self.strategy,
                     "proximal-mu": self.proximal_mu, "server-learning-rate": self.server_learning_rate,
                     "trim-fraction": self.trim_fraction, "byzantine-sites": self.byzantine_sites,
                     "norm-gate": self.norm_gate,
                     "round-timeout-s": self.round_timeout_s, "join-timeout-s": self.join_timeout_s,
                     "central-noise-multiplier": self.central_noise_multiplier,
                     "central-clip-norm": self.central_clip_norm, "central-delta": self.central_delta,
                     "tensorboard": self.tensorboard})
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, FlatValue]) -> "RunConfig":
        """Inverse of :meth:`to_flat`; missing keys take (the task's) defaults, unknown keys are refused."""
        # Keys left out take the defaults of the run's task (segmentation: the U-Net, its learning rate).
        baseline = {**cls().to_flat(), **defaults.task_defaults(str(flat.get("task", "classification")))}
        unknown = sorted(set(flat) - set(baseline) - set(IGNORED_FLAT_KEYS))
        if unknown:
            raise ConfigError(f"Unknown run configuration keys: {', '.join(unknown)}; "
                              f"valid keys: {', '.join(sorted(baseline))}.")
        merged = {**baseline, **{k: v for k, v in flat.items() if k in baseline}}
        # "proximal-mu" reaches sites from FedProx itself, not as a training setting.
        train, privacy, rounds = settings_from_message({k: v for k, v in merged.items() if k != "proximal-mu"})
        return cls(rounds=rounds, min_sites=int(merged["min-sites"]), strategy=str(merged["strategy"]),
                   proximal_mu=float(merged["proximal-mu"]),
                   server_learning_rate=float(merged["server-learning-rate"]),
                   trim_fraction=float(merged["trim-fraction"]), byzantine_sites=int(merged["byzantine-sites"]),
                   norm_gate=float(merged["norm-gate"]),
                   round_timeout_s=float(merged["round-timeout-s"]),
                   join_timeout_s=float(merged["join-timeout-s"]), seed=int(merged["seed"]),
                   central_noise_multiplier=float(merged["central-noise-multiplier"]),
                   central_clip_norm=float(merged["central-clip-norm"]),
                   central_delta=float(merged["central-delta"]), cross_site=_flag(merged["cross-site"]),
                   tensorboard=_flag(merged["tensorboard"]), train=train, privacy=privacy)

    def to_json(self) -> dict:
        return {"fedscan_version": __version__, **asdict(self)}


def _flag(value: FlatValue) -> bool:
    """A boolean run-config value; strings from ``--run-config`` overrides are read as words."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"Expected true or false, got {value!r}.")
        return value.lower() == "true"
    return bool(value)


def _check_training(train: TrainSettings) -> None:
    if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
        raise ConfigError("learning-rate must be a positive number.")
    if train.local_epochs < 1:
        raise ConfigError("local-epochs must be at least 1.")
    if train.batch_size < 1:
        raise ConfigError("batch-size must be at least 1.")
    if not 0 <= train.momentum < 1:
        raise ConfigError("momentum must be in [0, 1).")
    if train.task not in TASKS:
        raise ConfigError(f"Unknown task {train.task!r}; use one of {', '.join(TASKS)}.")
    if get_model_spec(train.model).task != train.task:
        raise ConfigError(f"Model {train.model!r} does {get_model_spec(train.model).task}; for task "
                          f"{train.task} choose one of: {', '.join(models_for(train.task))}.")
    if train.classical:
        from fedscan.common.classical import ClassicalConfig

        ClassicalConfig.parse(train.classical)  # raises with the valid keys


def _check_robust(config: RunConfig) -> None:
    if not 0 <= config.trim_fraction < 0.5:
        raise ConfigError("trim-fraction must be in [0, 0.5): the share cut from each end per parameter.")
    if config.byzantine_sites < 0:
        raise ConfigError("byzantine-sites must be ≥ 0.")
    if config.norm_gate < 0 or (0 < config.norm_gate < 1):
        raise ConfigError("norm-gate must be 0 (off) or ≥ 1 (a multiple of the round's median update norm).")


def _check_central_dp(config: RunConfig) -> None:
    if config.central_noise_multiplier < 0:
        raise ConfigError("central-noise-multiplier must be ≥ 0 (0 turns central DP off).")
    if not config.central_dp:
        return
    if config.strategy != "fedavg":
        raise ConfigError("Central DP adds noise to a FedAvg aggregate; use strategy fedavg with it.")
    if config.central_clip_norm <= 0:
        raise ConfigError("central-clip-norm must be positive (the L2 bound on one site's update).")
    if not 0 < config.central_delta < 1:
        raise ConfigError("central-delta must be in (0, 1); keep it below 1/(number of sites).")


def settings_from_message(config: dict) -> tuple[TrainSettings, PrivacyConfig, int]:
    """Rebuild (training settings, privacy config, planned rounds) at a site.

    Raises ConfigError when a key is missing or a value is invalid.
    """
    try:
        train = TrainSettings(
            model=str(config["model"]), learning_rate=float(config["learning-rate"]),
            momentum=float(config["momentum"]), local_epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]), augment=bool(config["augment"]),
            proximal_mu=float(config.get("proximal-mu", 0.0)), seed=int(config["seed"]),
            classical=str(config.get("classical", "")), task=str(config.get("task", "classification")))
        privacy = PrivacyConfig(epsilon=float(config["epsilon"]), delta=float(config["delta"]),
                                clip_norm=float(config["clip-norm"]), enabled=bool(config["dp"]),
                                secure_mode=bool(config.get("secure-mode", False)))
        rounds = int(config["rounds"])
    except KeyError as exc:
        raise ConfigError(f"The coordinator's configuration lacks {exc.args[0]!r}.") from None
    get_model_spec(train.model)
    _check_training(train)
    return train, privacy, rounds
