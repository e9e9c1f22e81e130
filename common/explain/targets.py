"""What a classifier's maps explain: the layer Grad-CAM reads and the score each class has.

Invariants: every map explains one class's *score* — the logit for binary and multi-label models
(each finding its own sigmoid) and the log-probability for multi-class ones (softmax: a class's
logit alone is defined only up to a shift shared by all classes). Models without a 2-D convolution
stack (classical features, 3-D networks) are refused with a ModelError before any image is read.
"""

from __future__ import annotations

import torch
from torch import nn

from fedscan.common.errors import ModelError
from fedscan.common.models.registry import get_model_spec
from fedscan.common.tasks import MULTICLASS

# The last convolution block's output, the layer Grad-CAM is defined on (Selvaraju et al. 2017):
# small-cnn's third ReLU (16 × 16 at a 64-pixel input, before the last pooling halves it);
# MONAI's DenseNet121 after its final norm and ReLU, ResNet-18's layer4 (both 2 × 2 at 64 px:
# coarse, which is what these deep networks give at this input size).
_TARGET_LAYERS = {
    "small-cnn": "features.10",
    "small-cnn-wide": "features.10",
    "small-cnn-ws": "features.10",
    "densenet121": "net.class_layers.relu",
    "resnet18": "net.layer4",
}


def target_layer(model_name: str) -> str:
    """The layer Grad-CAM reads for ``model_name`` (inside :class:`ClassScores`)."""
    spec = get_model_spec(model_name)
    if spec.task == "segmentation" and not spec.volumetric:
        raise ModelError(f"{model_name!r} is a segmentation model: its map is its predicted mask.")
    if model_name not in _TARGET_LAYERS:
        raise ModelError(
            f"`fedscan explain` draws maps of 2-D networks ({', '.join(_TARGET_LAYERS)}, unet); "
            f"{model_name!r} has no 2-D convolution layer to explain."
        )
    return f"model.{_TARGET_LAYERS[model_name]}"


def check_explainable(model_name: str) -> None:
    """A ModelError unless ``model_name`` is a 2-D classifier or the 2-D U-Net."""
    spec = get_model_spec(model_name)
    if not (spec.task == "segmentation" and not spec.volumetric):
        target_layer(model_name)


class ClassScores(nn.Module):
    """A classifier's outputs as an N × K matrix of class scores (see the module docstring)."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        logits = logits[:, None] if logits.dim() == 1 else logits
        return logits.log_softmax(dim=1) if self.kind == MULTICLASS else logits
