"""The images ``fedscan evaluate`` and ``fedscan explain`` score: a ``.npz`` split, or every
accepted image of a site folder (each series as a volume for a 3-D checkpoint), with masks for
segmentation. They are read here and stay here: the keys are local file paths.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.data.npz import load_npz_split, preprocess
from fedscan.common.data.sources import FolderSource, volume_input
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest.labels import LabelSpec
from fedscan.common.models.registry import get_model_spec
from fedscan.common.tasks import SEGMENTATION, LabelScheme


def load_eval_data(
    data: str,
    *,
    split: str,
    size: int,
    labels: LabelSpec | None = None,
    cache_dir: str = "",
    scheme: LabelScheme | None = None,
    model: str = "",
) -> ImageSet:
    """The images of ``--data`` (npz:PATH or dicom:DIR); ``model``: the checkpoint's, whose 3-D
    kind reads a folder's series as volumes."""
    kind, _, path_text = data.partition(":")
    path = Path(path_text).expanduser()
    if kind not in ("npz", "dicom") or not path_text:
        raise ConfigError(f"Unknown --data {data!r}; use npz:PATH or dicom:DIR.")
    if not path.exists():
        raise DataError(f"--data path does not exist: {path_text}")
    if kind == "npz":
        images, truth = load_npz_split(path, split, scheme)
        return ImageSet(
            preprocess(list(images), size),
            torch.as_tensor(truth),
            tuple(f"{split}:{index}" for index in range(len(truth))),
        )
    return folder_images(path, size, labels, cache_dir, scheme, masks=False, model=model)


def folder_images(
    path: Path,
    size: int,
    labels: LabelSpec | None,
    cache_dir: str,
    scheme: LabelScheme | None,
    *,
    masks: bool,
    model: str,
) -> ImageSet:
    """Every accepted image of a site folder — or, for a 3-D checkpoint, every series as a volume
    (keys: the series' names) — with masks for segmentation."""
    volume = volume_input(get_model_spec(model)) if model else None
    source = FolderSource("evaluate", str(path), labels or LabelSpec(), cache_dir=cache_dir)
    source = replace(source, val_fraction=0.0)
    return source.load(size, masks=masks, scheme=scheme, volume=volume).train


def load_masked_folder(
    data: str,
    *,
    size: int,
    labels: LabelSpec | None,
    cache_dir: str,
    structures: tuple[str, ...] = (),
    model: str = "",
) -> ImageSet:
    """Every accepted image of a ``dicom:DIR`` site folder, with its mask (a label map of
    ``structures`` when given)."""
    kind, _, path_text = data.partition(":")
    if kind != "dicom" or not path_text:
        raise ConfigError(
            f"A segmentation checkpoint is evaluated on a site folder with masks: use "
            f"--data dicom:DIR (got {data!r})."
        )
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise DataError(f"--data folder does not exist: {path_text}")
    scheme = LabelScheme(SEGMENTATION, structures)
    return folder_images(path, size, labels, cache_dir, scheme, masks=True, model=model)
