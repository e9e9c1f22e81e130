"""From a checkpoint's model and a site's images to one :class:`ImageExplanation` per image.

Invariants: the model is only read (eval mode, maps on copies of it); images, labels and masks
come from the caller's ImageSet in its order, and records keep that order until the index page
sorts them; thresholds are the checkpoint's (chosen by the federation), never fitted here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.explain.gradcam import as_scores, gradcam_maps
from fedscan.common.explain.occlusion import occlusion_maps
from fedscan.common.explain.records import ImageExplanation, decided
from fedscan.common.explain.settings import MASK, OCCLUSION, ExplainSettings
from fedscan.common.explain.targets import target_layer
from fedscan.common.tasks import BINARY, MULTICLASS, MULTILABEL, LabelScheme, findings_of

log = logging.getLogger(__name__)
FINDING = "finding"  # a binary model's one output


def class_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    model_name: str,
    kind: str,
    classes: int,
    settings: ExplainSettings,
) -> dict[str, np.ndarray]:
    """N × K maps per method in ``settings`` (each in [0, 1], the input's size)."""
    scores = as_scores(model, kind)
    maps = {}
    for method in settings.methods:
        if method == OCCLUSION:
            maps[method] = occlusion_maps(
                scores,
                images,
                patch=settings.patch,
                stride=settings.stride,
                batch_size=settings.batch_size,
            )
        else:
            layer = target_layer(model_name)
            maps[method] = gradcam_maps(
                scores,
                images,
                layer=layer,
                classes=classes,
                method=method,
                batch_size=settings.batch_size,
            )
    return maps


def explain_classifier(
    model: nn.Module, meta: Mapping[str, Any], images: ImageSet, settings: ExplainSettings
) -> list[ImageExplanation]:
    """Scores, predictions at the checkpoint's thresholds and maps of every image."""
    kind, names, probabilities, thresholds = _predictions(model, meta, images)
    maps = class_maps(
        model,
        images.images,
        model_name=str(meta["model"]),
        kind=kind,
        classes=len(names),
        settings=settings,
    )
    records = []
    for index, label in enumerate(images.labels.tolist()):
        records.append(
            ImageExplanation(
                key=_key(images, index),
                image=images.images[index, 0].numpy(),
                classes=names,
                scores=tuple(float(value) for value in probabilities[index]),
                truth=_truth(kind, names, int(label)),
                predicted=decided(
                    probabilities[index], names, thresholds, single=kind == MULTICLASS
                ),
                maps={
                    (method, name): found[index, k]
                    for method, found in maps.items()
                    for k, name in enumerate(names)
                },
                region=_region(images, index),
            )
        )
    log.info("explained %s images (%s)", len(records), ", ".join(settings.methods))
    return records


def explain_segmentation(
    probabilities: np.ndarray, images: ImageSet, structures: tuple[str, ...]
) -> list[ImageExplanation]:
    """Records whose map is the predicted mask: ``probabilities`` N × 1 × H × W (a binary mask)
    or N × (K + 1) × H × W (a label map of ``structures``)."""
    names = structures or (FINDING,)
    if structures:
        labels = probabilities.argmax(axis=1)
        masks = np.stack([labels == k + 1 for k in range(len(names))], axis=1)
        peaks = [probabilities[:, k + 1].max(axis=(1, 2)) for k in range(len(names))]
    else:
        masks, peaks = probabilities >= 0.5, [probabilities[:, 0].max(axis=(1, 2))]
    truth = np.rint(images.require_masks().numpy()[:, 0]).astype(np.int64)
    return [
        ImageExplanation(
            key=_key(images, index),
            image=images.images[index, 0].numpy(),
            classes=names,
            scores=tuple(float(peak[index]) for peak in peaks),
            truth=tuple(name for k, name in enumerate(names) if (truth[index] == k + 1).any()),
            predicted=tuple(name for k, name in enumerate(names) if masks[index, k].any()),
            maps={(MASK, name): masks[index, k].astype(np.float32) for k, name in enumerate(names)},
            region=(truth[index] > 0).astype(np.float32),
        )
        for index in range(len(images))
    ]


def _predictions(
    model: nn.Module, meta: Mapping[str, Any], images: ImageSet
) -> tuple[str, tuple[str, ...], np.ndarray, dict[str, float]]:
    """The task kind, the output names, N × K probabilities and the checkpoint's thresholds."""
    from fedscan.common.metrics.classification import predict, predict_classes

    kind = str(meta.get("task", BINARY))
    device = next(model.parameters()).device
    if kind in (MULTICLASS, MULTILABEL):
        scheme = LabelScheme(kind, tuple(str(name) for name in meta["classes"]))
        probabilities, _ = predict_classes(model, images, scheme, device=device)
        return kind, scheme.classes, probabilities, dict(meta.get("thresholds") or {})
    probabilities = predict(model, images, device=device)[0][:, None]
    return kind, (FINDING,), probabilities, {FINDING: float(meta.get("threshold", 0.5))}


def _truth(kind: str, names: tuple[str, ...], label: int) -> tuple[str, ...]:
    if kind == MULTICLASS:
        return (names[label],)
    if kind == MULTILABEL:
        return findings_of(label, names)
    return (FINDING,) if label else ()


def _key(images: ImageSet, index: int) -> str:
    return images.keys[index] if index < len(images.keys) else str(index)


def _region(images: ImageSet, index: int) -> np.ndarray | None:
    return None if images.masks is None else images.masks[index, 0].numpy().astype(np.float32)
