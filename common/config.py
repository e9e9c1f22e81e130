"""Run configuration: one frozen, validated object, flattened for the run config and for messages.

Config flows one way: CLI options, ``run.toml`` or ``[tool.flwr.app.config]`` → the flat kebab-case
run config → :meth:`RunConfig.from_flat` → RunConfig → :meth:`RunConfig.to_message`, the flat
settings every site receives → :meth:`SiteSettings.from_message` at the site. Keys, types, defaults
and meanings live on the dataclass fields (:func:`fedscan.common.settings.setting`); keys a run
leaves out take the defaults of its task (:data:`fedscan.common.defaults.TASK_DEFAULTS`). No path
is ever sent to a site: of the starting weights (``init-weights``) only their SHA-256 is, so each
site's approval covers them. Imports no torch: ``fedscan run`` and ``fedscan status`` start
without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fedscan import __version__
from fedscan.common import defaults, protocol
from fedscan.common.errors import ConfigError
from fedscan.common.models.registry import MODELS, get_model_spec, models_for
from fedscan.common.models.trainable import check_spec
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.run_checks import check_run
from fedscan.common.settings import (
    UNLESS_DEFAULT,
    Key,
    Names,
    coerce,
    flatten,
    keys_of,
    nest,
    omitted_defaults,
    optional_on_the_wire,
    setting,
    wire_keys,
)
from fedscan.common.tasks import SEGMENTATION, check_classes, model_task

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


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one site's local training in one round."""

    model: str = setting(
        defaults.MODEL,
        help="The model every site trains (default: the task's: small-cnn "
        "for classification, unet for segmentation).",
    )
    learning_rate: float = setting(
        defaults.LEARNING_RATE,
        help="Local SGD learning rate (default: the "
        "task's: 0.05 for classification, 0.1 for segmentation).",
    )
    momentum: float = setting(defaults.MOMENTUM, help="Local SGD momentum, in [0, 1).")
    local_epochs: int = setting(defaults.LOCAL_EPOCHS, help="Local epochs per round at each site.")
    batch_size: int = setting(
        defaults.BATCH_SIZE,
        help="Expected batch size (DP: Poisson sampling rate = batch / training samples).",
    )
    augment: bool = setting(
        True, help="Light label-preserving augmentation (random affine) while training."
    )
    augment_intensity: bool = setting(
        defaults.AUGMENT_INTENSITY,
        omit_default=True,
        help="Also vary each training image as another scanner would (gamma, contrast, "
        "brightness, noise, blur) when augment is on; classification only.",
    )
    augment_views: int = setting(
        defaults.AUGMENT_VIEWS,
        omit_default=True,
        help="Augmentation multiplicity: K augmented views of each training image, their "
        "gradients averaged before DP clipping (still one image's gradient; K× the compute); "
        "classification with augment on.",
    )
    augment_on: str = setting(
        defaults.AUGMENT_ON,
        omit_default=True,
        help="Where augmentation runs: device (batched where the site trains, GPU or CPU) or "
        "loader (per image, MONAI, on the CPU: slower; reproduces seeded runs of fedscan before "
        "2026-12-07).",
    )
    lr_schedule: str = setting(
        defaults.LR_SCHEDULE,
        omit_default=True,
        help="The learning rate over the run's rounds: constant, or cosine (from learning-rate "
        "in round 1 down to a tenth of it in the last round).",
    )
    trainable: str = setting(
        "all",
        omit_default=True,
        help="What the sites train: all, head (the last layer), last:N (the last N layers) or "
        "parameter-name prefixes, comma-separated; the rest stays the global model's and is not "
        "sent back (fine-tuning from --init; fedavg, fedprox or a robust strategy).",
    )
    proximal_mu: float = setting(
        0.0, flat=False, help="FedProx's proximal weight, as the strategy sends it."
    )
    seed: int = setting(
        defaults.SEED, flat=False, help="Shuffling seed without DP (the run's seed)."
    )
    classical: str = setting(
        "",
        help="The classical models' preprocessing and features, e.g. "
        '"median=3,equalize=clahe,roi=otsu,hog-cell=8,lbp-grid=4"; empty: the defaults.',
    )
    task: str = setting(
        "classification",
        help="classification (one 0/1 label per image), multiclass (one of `classes` per "
        "image), multilabel (any subset of `classes`) or segmentation (a mask per image).",
    )
    classes: Names = setting(
        (),
        omit_default=True,
        help="multiclass / multilabel: the class (finding) names, in order; every site checks "
        'its labels against them, e.g. ["normal", "effusion", "nodule"]. Segmentation: a label '
        "map's structures, mask value k the k-th (none: a binary mask).",
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


def check_training(train: TrainSettings) -> None:
    """Training settings a site can run; ConfigError says which one to change."""
    if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
        raise ConfigError("learning-rate must be a positive number.")
    if train.local_epochs < 1:
        raise ConfigError("local-epochs must be at least 1.")
    if train.batch_size < 1:
        raise ConfigError("batch-size must be at least 1.")
    if not 0 <= train.momentum < 1:
        raise ConfigError("momentum must be in [0, 1).")
    _check_views_and_schedule(train)
    check_spec(train.trainable)
    if train.task not in defaults.TASKS:
        raise ConfigError(f"Unknown task {train.task!r}; use one of {', '.join(defaults.TASKS)}.")
    spec = get_model_spec(train.model)
    if spec.task != model_task(train.task):
        usable = models_for(model_task(train.task))
        raise ConfigError(
            f"Model {train.model!r} does not do task {train.task}; choose one of: "
            f"{', '.join(usable)}."
        )
    check_classes(train.task, train.classes)
    if train.classical:
        from fedscan.common.models.classical import ClassicalConfig

        ClassicalConfig.parse(train.classical)  # raises with the valid keys


def _check_views_and_schedule(train: TrainSettings) -> None:
    if train.lr_schedule not in defaults.LR_SCHEDULES:
        raise ConfigError(
            f"Unknown lr-schedule {train.lr_schedule!r}; use one of "
            f"{', '.join(defaults.LR_SCHEDULES)}."
        )
    if train.augment_on not in defaults.AUGMENT_PLACES:
        raise ConfigError(
            f"Unknown augment-on {train.augment_on!r}; use one of "
            f"{', '.join(defaults.AUGMENT_PLACES)}."
        )
    if not 1 <= train.augment_views <= 16:
        raise ConfigError("augment-views must be 1 to 16 (each view costs a forward and backward).")
    if train.augment_views > 1 and not (train.augment and train.task != SEGMENTATION):
        raise ConfigError(
            "augment-views > 1 averages augmented views of an image: it needs augment = true "
            "and a classification task (binary, multiclass or multilabel), not segmentation."
        )


_SECURE_KEY = protocol.config_key("secure_aggregation")


def _secure_defaults(given: Mapping[str, Any]) -> dict[str, FlatValue]:
    """Secure aggregation turns cross-site validation's default off (it releases each site's own
    fine-tuned model); a run that sets cross-site itself is checked instead."""
    on = coerce(given.get(_SECURE_KEY, False), _secure_key(), what=_SECURE_KEY)
    chosen = defaults.SECURE_AGGREGATION_DEFAULTS
    return _flat_defaults(chosen) if on else {}


def _secure_key() -> Key:
    return next(key for key in keys_of(RunConfig, flat_only=True) if key.name == _SECURE_KEY)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) → (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Address {address!r} must be host:port.")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    """(host, port) → ``host:port``, an IPv6 host in brackets (the inverse of split_address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
