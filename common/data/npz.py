"""MedMNIST-style ``.npz`` datasets (benchmarks and npz simulations): splits, shards, preprocessing.

Arrays go through MONAI transforms (intensity scaling, resize to the model's input size) and end as
tensors; an npz site has no masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedscan.common.data.imageset import ImageSet, SiteData
from fedscan.common.data.partition import partition_indices
from fedscan.common.errors import DataError
from fedscan.common.tasks import MULTICLASS, MULTILABEL, LabelScheme

NPZ_SPLITS = ("train", "val", "test")


def preprocess(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Scale each 2-D image to [0, 1] and resize it to ``size``×``size``."""
    from monai.transforms import Compose, EnsureChannelFirst, Resize, ScaleIntensity
    from monai.utils import convert_to_tensor

    transform = Compose(
        [
            EnsureChannelFirst(channel_dim="no_channel"),
            ScaleIntensity(minv=0.0, maxv=1.0),
            Resize((size, size), mode="area"),
        ]
    )
    if not images:
        return torch.zeros((0, 1, size, size))
    return torch.stack(
        [convert_to_tensor(transform(image), track_meta=False).float() for image in images]
    )


def _check_labels(labels: np.ndarray, origin: str, scheme: LabelScheme) -> np.ndarray:
    """MedMNIST labels as fedscan's integer labels: (N, 1) or (N,) 0/1 (binary) or class indices
    (multiclass); an (N, K) 0/1 matrix (multilabel, like ChestMNIST) → bit sets."""
    labels = np.asarray(labels)
    if scheme.kind == MULTILABEL:
        if labels.ndim != 2 or labels.shape[1] != len(scheme.classes):
            raise DataError(
                f"{origin}: multilabel needs an N×{len(scheme.classes)} 0/1 matrix (one column "
                f"per finding: {', '.join(scheme.classes)}); got shape {labels.shape}."
            )
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise DataError(f"{origin}: multilabel entries must be 0 or 1.")
        weights = np.left_shift(1, np.arange(labels.shape[1], dtype=np.int64))
        return (labels.astype(np.int64) * weights).sum(axis=1)
    labels = labels.reshape(-1)
    allowed = range(len(scheme.classes)) if scheme.kind == MULTICLASS else (0, 1)
    if labels.size and not np.isin(labels, list(allowed)).all():
        what = (
            f"class indices 0..{len(scheme.classes) - 1}" if scheme.kind == MULTICLASS else "0 or 1"
        )
        raise DataError(f"{origin}: labels must be {what} for task {scheme.kind}.")
    return labels.astype(np.int64)


def load_npz_split(
    path: Path, split: str, scheme: LabelScheme | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw images (N×H×W, float in [0, 1]) and labels of ``split`` in a MedMNIST npz."""
    if split not in NPZ_SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(NPZ_SPLITS)}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(
                    f"The npz file has no '{split}_images'/'{split}_labels' arrays "
                    f"(found: {', '.join(sorted(keys))})."
                )
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    except DataError:
        raise
    except Exception as exc:  # zip, pickle and I/O errors all mean "not a usable npz"
        raise DataError(
            f"Cannot read the npz file ({type(exc).__name__}); check that it is a "
            "MedMNIST-style .npz archive."
        ) from exc
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.mean(axis=-1)
    if images.ndim != 3:
        raise DataError(f"'{split}_images' must be N×H×W grayscale; got shape {images.shape}.")
    scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1.0)
    checked = _check_labels(labels, f"'{split}_labels'", scheme or LabelScheme())
    return images.astype(np.float32) / scale, checked


def load_npz_shard(
    path: Path,
    *,
    site: int,
    sites: int,
    partition: str,
    seed: int,
    size: int,
    scheme: LabelScheme | None = None,
) -> SiteData:
    """One site's shard of an npz's train and val splits."""
    train_x, train_y = load_npz_split(path, "train", scheme)
    val_x, val_y = load_npz_split(path, "val", scheme)
    train_parts, val_parts = partition_indices([train_y, val_y], sites, partition, seed)
    train_idx, val_idx = train_parts[site], val_parts[site]
    return SiteData(
        train=ImageSet(
            preprocess(list(train_x[train_idx]), size), torch.as_tensor(train_y[train_idx])
        ),
        val=ImageSet(preprocess(list(val_x[val_idx]), size), torch.as_tensor(val_y[val_idx])),
    )
