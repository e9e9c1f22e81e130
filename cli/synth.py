"""``fedscan synth``: synthetic hospitals to try fedscan on, written as a real site's folder is
laid out (DICOM files and a labels.csv per site; masks where the task has them). The same seed
writes identical files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedscan.cli.console import console, fail
from fedscan.common import defaults
from fedscan.common.errors import FedscanError


def synth(
    out: Annotated[Path, typer.Option(help="Folder to write site-0 ... site-{N-1} into.")],
    sites: Annotated[int, typer.Option(help="Number of synthetic hospitals.")] = defaults.SITES,
    seed: Annotated[
        int, typer.Option(help="Seed; the same seed writes identical files.")
    ] = defaults.SEED,
    images_per_site: Annotated[
        int | None,
        typer.Option(
            help=f"DICOM images per site (default {defaults.IMAGES_PER_SITE}); --modality ct: "
            f"series per site (default {defaults.VOLUMES_PER_SITE}).",
            show_default=False,
        ),
    ] = None,
    modality: Annotated[
        str,
        typer.Option(
            help="cr: chest radiographs (one file per image). ct: chest-CT series (one file per "
            "slice; site 1 shuffled and reversed with NIfTI masks, site 2 enhanced multi-frame; "
            "nodules as the finding, 3-D masks; site 0 also three broken series)."
        ),
    ] = "cr",
    task: Annotated[
        str,
        typer.Option(
            help="What labels.csv and the masks hold. classification: a 0/1 label (opacities), "
            "a 0/255 mask. multiclass: a finding column, one of normal, opacity, nodule, "
            "effusion. multilabel: 0/1 columns opacity, nodule, effusion, cardiomegaly and a "
            "findings column (present names, |-separated). segmentation: masks are label maps "
            "(see --labels). Every task keeps the 0/1 label column (any finding)."
        ),
    ] = "classification",
    labels: Annotated[
        int | None,
        typer.Option(
            help="Segmentation only: structures K in each label-map mask, 1-4: 0 background, "
            "then 1 opacity, 2 heart, 3 nodule, 4 effusion (the first K). 1 writes the "
            "classification task's 0/255 opacity masks (the default).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write synthetic hospitals: DICOM chest-radiograph phantoms (or CT series) and a labels.csv
    per site."""
    from fedscan.common.data.synth import SynthConfig, generate_sites

    try:
        if modality not in ("cr", "ct"):
            raise fail(f"Unknown --modality {modality!r}; use cr or ct.")
        if modality == "ct":
            _synth_ct(out, sites, seed, images_per_site, task, labels)
            return
        count = defaults.IMAGES_PER_SITE if images_per_site is None else images_per_site
        config = SynthConfig(sites, count, seed, task, 1 if labels is None else labels)
        # An explicit --labels 1 is a mistake without segmentation too; the config cannot tell
        # it from the default, so it is checked here (after the task name is known to be valid).
        if labels is not None and task != "segmentation":
            raise fail(f"--labels is only for --task segmentation (got --task {task}).")
        site_dirs = generate_sites(out, config)
    except (FedscanError, OSError) as exc:
        raise fail(str(exc)) from None
    for site_dir in site_dirs:
        console.print(f"wrote {site_dir}", highlight=False, soft_wrap=True)


def _synth_ct(
    out: Path, sites: int, seed: int, volumes: int | None, task: str, labels: int | None
) -> None:
    from fedscan.common.data.synth_ct import CTConfig, generate_ct_sites

    if task != "classification" or labels is not None:
        raise fail(
            "--modality ct writes one finding (nodules) with a 0/1 label and a 3-D mask per "
            "series: leave out --task and --labels (segmentation runs read the masks)."
        )
    count = defaults.VOLUMES_PER_SITE if volumes is None else volumes
    for site_dir in generate_ct_sites(out, CTConfig(sites, count, seed)):
        console.print(f"wrote {site_dir}", highlight=False, soft_wrap=True)
