"""Scoring a model the coordinator sent on the site's own validation images.

Invariant: what comes back is per-site metrics (scalars) and, for classification, the validation
score histogram; for segmentation three overlap counts (a label map: also K × 3 per structure). No
per-image score, mask or key leaves here;
the reply builder (:mod:`fedscan.client.replies`) checks that again before anything is sent.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord

from fedscan.client.site import Site
from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.data.sources import volume_input
from fedscan.common.metrics.classification import binary_metrics, predict
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.protocol import LOSS, NUM_EXAMPLES
from fedscan.common.tasks import MULTICLASS, MULTILABEL, LabelScheme
from fedscan.common.training_settings import TrainSettings

if TYPE_CHECKING:
    from fedscan.common.metrics.classwise import ClassEvidence
    from fedscan.common.metrics.confusion import LabelOverlaps

Scored = tuple[dict[str, float], "ScoreHistogram | ClassEvidence | LabelOverlaps | None"]


def load_for(site: Site, train: TrainSettings) -> SiteData:
    """The site's data at the run's model's input size, labelled for the run's task kind and
    classes; with every image's mask when the model segments."""
    spec = get_model_spec(train.model)
    scheme = LabelScheme(train.task, train.classes)
    masks = spec.task == "segmentation"
    volume = volume_input(spec)
    if volume is None:  # a 2-D model: sources written before volumes keep working
        return site.source.load(spec.input_size, masks=masks, scheme=scheme)
    return site.source.load(spec.input_size, masks=masks, scheme=scheme, volume=volume)


def pixels_per_image(val: ImageSet) -> int:
    """Pixels (voxels) of one validation image's mask: the unit of segmentation overlap counts."""
    return max(int(math.prod(val.images.shape[2:])), 1)


def score(
    model: tuple[str, str],
    arrays: ArrayRecord,
    val: ImageSet,
    *,
    device: torch.device,
    threshold: float,
    scheme: LabelScheme | None = None,
) -> Scored:
    """Metrics of one model (name, classical options) on the site's validation images, and their
    score histogram; for segmentation Dice, IoU, Hausdorff-95 and the overlap counts (no
    histogram); for a multiclass or multilabel ``scheme`` the per-class evidence."""
    name, options = model
    built = build_model(
        name, check_dp=False, options=options, outputs=scheme.outputs if scheme else 1
    )  # evaluation only: no DP-SGD, no Opacus import
    built.load_state_dict(arrays.to_torch_state_dict())
    if scheme is not None and scheme.kind in (MULTICLASS, MULTILABEL):
        return _score_classes(built, val, scheme, device)
    if scheme is not None and scheme.structures:
        return _score_label_map(built, val, scheme, device)
    if get_model_spec(name).task == "segmentation":
        from fedscan.common.metrics.segmentation import evaluate_segmentation

        metrics, counts = evaluate_segmentation(built, val, device=device)
        return {
            **metrics,
            **counts.to_metrics(),
            NUM_EXAMPLES: len(val),
        }, None  # counts: pooled centrally
    scores, loss = predict(built, val, device=device)
    labels = val.labels.numpy()
    metrics = binary_metrics(labels, scores, threshold=threshold)
    metrics.update({LOSS: loss, NUM_EXAMPLES: len(val)})
    metrics.pop("n", None)
    return metrics, ScoreHistogram.of(
        scores, labels
    )  # counts per score bin: pooled at the coordinator


def _score_label_map(
    model: torch.nn.Module, val: ImageSet, scheme: LabelScheme, device: torch.device
) -> Scored:
    from fedscan.common.metrics.segmentation import evaluate_label_map

    metrics, foreground, per_label = evaluate_label_map(model, val, scheme.classes, device=device)
    # Both count sets are pooled centrally: the foreground's and the K × 3 per structure.
    return {**metrics, **foreground.to_metrics(), NUM_EXAMPLES: len(val)}, per_label


def _score_classes(
    model: torch.nn.Module, val: ImageSet, scheme: LabelScheme, device: torch.device
) -> Scored:
    from fedscan.common.metrics.classification import predict_classes
    from fedscan.common.metrics.classwise import ClassEvidence, site_scalars

    probabilities, loss = predict_classes(model, val, scheme, device=device)
    evidence = ClassEvidence.of(probabilities, val.labels.numpy(), scheme)
    metrics = {**site_scalars(evidence), LOSS: loss, NUM_EXAMPLES: len(val)}
    return metrics, evidence  # per-class counts and sums: pooled at the coordinator
