"""``fedscan explain``: where a checkpoint looks, on the hospital's own images, for its own eyes.

Loads the checkpoint and the site's data exactly as ``fedscan evaluate`` does
(:mod:`fedscan.client.local_evaluation`), computes the maps (:mod:`fedscan.common.explain`) and
writes overlays, an index page and optionally DICOM Secondary Captures into ``--out``. Hospital-side
only: it imports no coordinator code, opens no connection, and prints only what it wrote and how
many images were misclassified — never a map, a key or a score.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedscan.cli.console import console, fail
from fedscan.common.errors import DataError, FedscanError
from fedscan.common.ingest.labels import LabelSpec

if TYPE_CHECKING:
    from torch import nn

    from fedscan.common.data.imageset import ImageSet
    from fedscan.common.explain import ExplainSettings, ImageExplanation
    from fedscan.common.explain.outputs import Written


@dataclass(frozen=True)
class ExplainRequest:
    """One ``explain``: what to explain, where from and where to."""

    checkpoint: Path
    data: str
    out: Path
    split: str = "val"
    labels: LabelSpec = LabelSpec()
    device: str = "cpu"
    dicom_sc: bool = False
    limit: int = 0  # at most this many images (0: all)


def explain(
    checkpoint: Annotated[Path, typer.Option(help="final.pt (with final.json beside it).")],
    data: Annotated[str, typer.Option(help="dicom:DIR (one site folder) or npz:PATH.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html, overlays/ and dicom/.")],
    methods: Annotated[
        str,
        typer.Option(help="Classifiers: any of gradcam, gradcam++, occlusion (comma-separated)."),
    ] = "gradcam,occlusion",
    dicom_sc: Annotated[
        bool,
        typer.Option(
            "--dicom-sc",
            help="Also write each overlay as a DICOM Secondary Capture (dicom/), filed under the "
            "source image's patient and study for the site's own PACS.",
        ),
    ] = False,
    split: Annotated[str, typer.Option(help="npz split: train | val | test.")] = "val",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels CSV for dicom:DIR (default: labels.csv in it).", show_default=False
        ),
    ] = None,
    patch: Annotated[int, typer.Option(help="Occlusion patch side, input pixels.")] = 8,
    stride: Annotated[int, typer.Option(help="Occlusion patch step, input pixels.")] = 4,
    limit: Annotated[int, typer.Option(help="Explain at most this many images (0: all).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Explanation maps of a checkpoint on local images (Grad-CAM, occlusion; segmentation: the
    predicted mask): PNG overlays and an index page with the misclassified images first. The maps
    stay at the site."""
    from fedscan.common.explain import ExplainSettings

    try:
        settings = ExplainSettings.parse(methods, patch=patch, stride=stride)
        spec = LabelSpec() if labels is None else LabelSpec(csv=str(labels))
        request = ExplainRequest(checkpoint, data, out, split, spec, device, dicom_sc, limit)
        written, errors, count = run_explain(request, settings)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"explained {count} images ({errors} misclassified, listed first): {written.index}"
        + (f"; {len(written.captures)} Secondary Captures in {out / 'dicom'}" if dicom_sc else ""),
        highlight=False,
    )


def run_explain(request: ExplainRequest, settings: ExplainSettings) -> tuple[Written, int, int]:
    """Load, explain, write: (what was written, misclassified images, images)."""
    from fedscan.common.device import resolve_device
    from fedscan.common.explain import write_explanations
    from fedscan.common.explain.targets import check_explainable
    from fedscan.common.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(request.checkpoint)
    check_explainable(str(meta["model"]))
    site_dir = _site_folder(request.data)
    model = model.to(resolve_device(request.device)).eval()
    records = _records(model, meta, request, settings)
    written = write_explanations(
        records,
        request.out,
        title=f"fedscan explain: {request.checkpoint.name} ({meta['model']})",
        summary=f"Data: {request.data}. Maps: {', '.join(_methods(meta, settings))}.",
        site_dir=site_dir,
        dicom_sc=request.dicom_sc,
    )
    return written, sum(1 for record in records if record.errors), len(records)


def _site_folder(data: str) -> Path | None:
    """The ``dicom:DIR`` folder (whose headers file the captures); a one-line DataError when it
    holds no file at all."""
    kind, _, text = data.partition(":")
    folder = Path(text).expanduser()
    if kind != "dicom" or not folder.is_dir():
        return None  # load_eval_data's own errors name the problem
    if not any(path.is_file() for path in folder.rglob("*")):
        raise DataError(
            f"--data folder {text} is empty; point it at a site folder with images and its "
            "labels.csv (`fedscan data check DIR` lists what a folder holds)."
        )
    return folder


def _records(
    model: nn.Module, meta: dict[str, Any], request: ExplainRequest, settings: ExplainSettings
) -> list[ImageExplanation]:
    """One record per image of ``request.data`` (the first ``limit``), loaded as ``evaluate``
    loads it."""
    from fedscan.client.eval_data import load_eval_data
    from fedscan.common.explain import explain_classifier
    from fedscan.common.ingest.cache import default_cache_dir
    from fedscan.common.models.registry import get_model_spec
    from fedscan.common.tasks import MULTICLASS, MULTILABEL

    if get_model_spec(str(meta["model"])).task == "segmentation":
        return _segmentation_records(model, meta, request)
    scheme = None
    if meta.get("task") in (MULTICLASS, MULTILABEL):
        from fedscan.client.class_evaluation import scheme_of

        scheme = scheme_of(meta)
    images = load_eval_data(
        request.data,
        split=request.split,
        size=int(meta["input_size"]),
        labels=request.labels,
        cache_dir=default_cache_dir(),
        scheme=scheme,
        model=str(meta["model"]),
    )
    return explain_classifier(model, meta, _first(images, request.limit), settings)


def _segmentation_records(
    model: nn.Module, meta: dict[str, Any], request: ExplainRequest
) -> list[ImageExplanation]:
    from fedscan.client.eval_data import load_masked_folder
    from fedscan.common.explain import explain_segmentation
    from fedscan.common.ingest.cache import default_cache_dir
    from fedscan.common.metrics.segmentation import predict_masks

    structures = tuple(str(name) for name in meta.get("classes") or ())
    images = load_masked_folder(
        request.data,
        size=int(meta["input_size"]),
        labels=request.labels,
        cache_dir=default_cache_dir(),
        structures=structures,
        model=str(meta["model"]),
    )
    images = _first(images, request.limit)
    device = next(model.parameters()).device
    probabilities, _ = predict_masks(model, images, device=device, structures=structures)
    return explain_segmentation(probabilities, images, structures)


def _first(images: ImageSet, limit: int) -> ImageSet:
    """The first ``limit`` images (all when 0); a DataError when none was accepted."""
    if len(images) == 0:
        raise DataError(
            "No image of --data was accepted; `fedscan data check DIR` shows each file's reason."
        )
    if not limit or limit >= len(images):
        return images
    masks = None if images.masks is None else images.masks[:limit]
    return replace(
        images,
        images=images.images[:limit],
        labels=images.labels[:limit],
        keys=images.keys[:limit],
        masks=masks,
    )


def _methods(meta: dict[str, Any], settings: ExplainSettings) -> list[str]:
    from fedscan.common.explain.settings import TITLES
    from fedscan.common.models.registry import get_model_spec

    if get_model_spec(str(meta["model"])).task == "segmentation":
        return ["predicted mask"]
    return [TITLES[method] for method in settings.methods]
