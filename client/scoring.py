"""Scoring a model the coordinator sent on the site's own validation images.

Invariant: what comes back is per-site metrics (scalars) and, for classification, the validation
score histogram; for segmentation three overlap counts. No per-image score, mask or key leaves here;
the reply builder (:mod:`fedscan.client.replies`) checks that again before anything is sent.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from fedscan.client.site import Site
from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.metrics.classification import binary_metrics, predict
from fedscan.common.metrics.histogram import ScoreHistogram
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.protocol import LOSS, NUM_EXAMPLES

Scored = tuple[dict[str, float], ScoreHistogram | None]


def load_for(site: Site, model: str) -> SiteData:
    """The site's data at ``model``'s input size; with every image's mask when the model
    segments."""
    spec = get_model_spec(model)
    return site.source.load(spec.input_size, masks=spec.task == "segmentation")


def score(
    model: tuple[str, str],
    arrays: ArrayRecord,
    val: ImageSet,
    *,
    device: torch.device,
    threshold: float,
) -> Scored:
    """Metrics of one model (name, classical options) on the site's validation images, and their
    score histogram; for segmentation Dice, IoU, Hausdorff-95 and the overlap counts (no
    histogram)."""
    name, options = model
    built = build_model(
        name, check_dp=False, options=options
    )  # evaluation only: no DP-SGD, no Opacus import
    built.load_state_dict(arrays.to_torch_state_dict())
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
