"""What an attacker observes of one image: the model's logit-scaled confidence in its true label.

For the label's probability p, φ = log(p / (1 − p)) (Carlini et al. 2022): unlike p it is
close to Gaussian over training runs, which is what LiRA fits. It is computed from the logits,
never from a rounded probability, so a confident model's scores keep their order:

- binary (one logit z, sigmoid): φ = z for label 1, −z for label 0;
- multiclass (softmax over K logits): φ = z_y − logsumexp_{j≠y} z_j;
- multilabel (one sigmoid per finding): φ = Σ_k ±z_k, each finding's φ summed.

LiRA may query each image several times, as the paper does with the views the training
augmentation could have shown: :func:`view_confidence` averages φ over whole-pixel shifts inside the
training affine's ±3 px (:data:`QUERY_SHIFTS`), edges repeated as its border padding does.

The per-image training loss is a function of the same numbers: softplus(−φ) for binary and
multiclass (log-loss and cross-entropy), Σ_k softplus(−φ_k) for multilabel, as
:func:`fedscan.common.models.training.training_loss` sums it. Segmentation models are refused:
the audit covers classifiers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedscan.common.errors import ModelError
from fedscan.common.tasks import BINARY, MULTICLASS, MULTILABEL

# (rows, columns): the image itself and four 2-pixel shifts, inside the training affine's range.
QUERY_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
SINGLE_QUERY = ((0, 0),)


def check_classifier(kind: str) -> None:
    """ModelError unless ``kind`` is a classification task the audit can score."""
    if kind not in (BINARY, MULTICLASS, MULTILABEL):
        raise ModelError(
            f"The membership audit covers classifiers (binary, multiclass, multilabel); this "
            f"checkpoint is a {kind} model. Audit a classification run's final.pt instead."
        )


@torch.no_grad()
def model_logits(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """The model's raw outputs for ``images`` in eval mode, float64: N (one logit) or N×K."""
    model.to(device).eval()
    parts = [
        model(images[start : start + batch_size].to(device)).double().cpu().numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def output_confidences(logits: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
    """N×C logit-scaled confidences: one column (binary, multiclass) or one per finding."""
    check_classifier(kind)
    labels = np.asarray(labels, dtype=np.int64)
    if kind == BINARY:
        signs = np.where(labels.reshape(-1) == 1, 1.0, -1.0)
        return (signs * np.asarray(logits, dtype=np.float64).reshape(-1))[:, None]
    logits = np.asarray(logits, dtype=np.float64)
    if kind == MULTILABEL:
        bits = (labels[:, None] >> np.arange(logits.shape[1])) & 1
        return np.where(bits == 1, logits, -logits)
    rows = np.arange(len(labels))
    true = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    top = others.max(axis=1)
    rest = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    return (true - rest)[:, None]


def confidence(logits: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
    """φ per image (N,): the logit-scaled confidence in its true label (see the module)."""
    return output_confidences(logits, labels, kind).sum(axis=1)


def example_loss(logits: np.ndarray, labels: np.ndarray, kind: str) -> np.ndarray:
    """Each image's training loss (N,): log-loss, cross-entropy or summed per-finding log-loss."""
    return np.logaddexp(0.0, -output_confidences(logits, labels, kind)).sum(axis=1)


def shifted(images: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """N×C×H×W images moved by whole pixels, the edge pixels repeated into the gap."""
    if rows == columns == 0:
        return images
    pad = max(abs(rows), abs(columns))
    padded = functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    height, width = images.shape[-2:]
    return padded[..., pad - rows : pad - rows + height, pad - columns : pad - columns + width]


def view_confidence(
    model: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    kind: str,
    *,
    device: torch.device,
    shifts: tuple[tuple[int, int], ...] = QUERY_SHIFTS,
) -> np.ndarray:
    """φ per image (N,) averaged over its shifted views; volumes (N×C×D×H×W) are queried as
    they are."""
    if images.ndim != 4:
        shifts = SINGLE_QUERY
    views = [
        confidence(model_logits(model, shifted(images, rows, columns), device=device), labels, kind)
        for rows, columns in shifts
    ]
    return np.mean(views, axis=0)
