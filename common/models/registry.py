"""Models by name: what each is, its input size and how it trains — without importing torch.

The registry is data only, so configuration (``fedscan run``, ``status``, run-config validation) can
check a model name without paying for torch; :func:`fedscan.common.models.networks.build_model`
builds the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedscan.common.defaults import TASKS
from fedscan.common.errors import ModelError

CLASSICAL_INPUT_SIZE = 64


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and train it with DP.

    ``grad_sample_mode`` is where the model's per-sample gradients come from under DP: fedscan's
    own ``"fused"`` path (:mod:`fedscan.common.models.persample`) for every network it has a rule
    for each trainable layer of; otherwise an Opacus mode (``"hooks"``; weight-standardised
    convolutions have no rule and go to Opacus' functorch fallback inside hooks).
    """

    name: str
    input_size: int
    # fused: DP step ÷ plain step 1.32× (small-cnn), 1.38× (unet), 1.77× (densenet121), 2.14×
    # (resnet18), against Opacus' best mode 1.55×, 2.23×, 2.33×, 3.30× (bench/dp_step.py, batch
    # 32, 2 threads); a site's round: docs/benchmarks.md.
    grad_sample_mode: str = "fused"
    description: str = ""
    loss: str = "bce"  # "hinge" for the linear SVM, "dice-ce" for segmentation
    classical: bool = (
        False  # built from run config ``classical``; standardised by federated statistics
    )
    task: str = "classification"  # or "segmentation" (see TASKS)
    # A 3-D model trains on volumes: ``depth`` × input_size × input_size voxels of ``voxel_mm``
    # (isotropic); sites assemble DICOM series for it. 0: a 2-D model (images).
    depth: int = 0
    voxel_mm: float = 0.0
    batch_size: int = 0  # its default expected batch when a run sets none (0: the run default)
    learning_rate: float = 0.0  # its default learning rate when a run sets none (0: the task's)
    local_epochs: int = 0  # its default local epochs when a run sets none (0: the run default)

    @property
    def volumetric(self) -> bool:
        return self.depth > 0


_HEADS = {"svm": "linear SVM", "logreg": "logistic regression"}
_CLASSICAL = tuple(
    ModelSpec(
        f"{kind}-{head}",
        CLASSICAL_INPUT_SIZE,
        loss="hinge" if head == "svm" else "bce",
        classical=True,
        description=f"{kind.upper()} features → {_HEADS[head]}",
    )
    for kind in ("hog", "lbp")
    for head in ("svm", "logreg")
)

# Volumes: 32 × 64 × 64 voxels of 5 mm (160 × 320 × 320 mm: a chest CT's lungs and body).
# Batch 16, not 64: Opacus' per-sample convolution gradients unfold each layer's input (27 values
# per voxel), ~230 MB for the first layer at 16 volumes and ~0.9 GB at 64 (bench/volumes.py).
_VOLUME_MODELS = tuple(
    ModelSpec(name, 64, depth=32, voxel_mm=5.0, batch_size=16, **extra)
    for name, extra in (
        # lr 0.01: centrally on 3 synthetic CT sites × 45 training volumes (no DP, 6 epochs) the
        # task's 0.05 diverged (loss 1.05, AUC 0.51), 0.01 reached validation AUC 0.979.
        (
            "cnn3d",
            {
                "description": "3-block 3-D CNN, ~19k parameters (volumes' default)",
                "learning_rate": 0.01,
            },
        ),
        ("densenet3d", {"description": "MONAI 3-D DenseNet (slim), GroupNorm"}),
        (
            "unet3d",
            {
                "loss": "dice-ce",
                "task": "segmentation",
                "description": "MONAI 3-D residual U-Net, InstanceNorm (volume segmentation)",
                # lr 0.2: centrally (3 sites × 45 training volumes, batch 16, no DP) validation
                # Dice after epochs 4-6 was 0.45 / 0.47 / 0.42; at the task's 0.1 0.04 / 0.18 /
                # 0.36; at 0.3 0.20 / 0.70 / 0.13 (unstable).
                "learning_rate": 0.2,
                # 5 local epochs: federated (3 synthetic CT sites × 45 training volumes, no DP)
                # 5 rounds of 3 epochs reached Dice 0.005; of 5 epochs 0.815 (round 5).
                "local_epochs": 5,
            },
        ),
    )
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("small-cnn", 64, description="3-block CNN, ~25k parameters (default)"),
        ModelSpec("small-cnn-wide", 64, description="small-cnn, twice the channels, ~95k params"),
        ModelSpec(
            "small-cnn-ws",
            64,
            grad_sample_mode="hooks",
            description="small-cnn, weight-standardised convolutions",
        ),
        ModelSpec("densenet121", 64, description="MONAI DenseNet121, GroupNorm"),
        ModelSpec("resnet18", 64, description="MONAI ResNet-18, GroupNorm"),
        *_CLASSICAL,
        ModelSpec(
            "unet",
            64,
            loss="dice-ce",
            task="segmentation",
            description="MONAI residual U-Net, InstanceNorm (segmentation)",
        ),
        *_VOLUME_MODELS,
    )
}
__all__ = ["CLASSICAL_INPUT_SIZE", "MODELS", "TASKS", "ModelSpec", "get_model_spec", "models_for"]


def models_for(task: str) -> list[str]:
    """The names of the models that do ``task``."""
    return [name for name, spec in MODELS.items() if spec.task == task]


def get_model_spec(name: str) -> ModelSpec:
    """Look up a model by name; the error lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"Unknown model {name!r}; choose one of: {', '.join(MODELS)}.") from None
