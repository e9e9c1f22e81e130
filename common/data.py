"""Site datasets: a DICOM folder with ``labels.csv``, or a MedMNIST-style ``.npz``.

Everything is decoded once per load, passed through MONAI transforms
(intensity scaling, resize to the model's input size) and held as tensors.
Training-time augmentation is applied per sample by :class:`TrainingSet`.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, EnsureChannelFirst, RandAffine, Resize, ScaleIntensity
from monai.utils import convert_to_tensor

from fedscan.common.dicom import RejectedFile, read_image
from fedscan.common.errors import DataError
from fedscan.common.partition import partition_indices
from fedscan.common.synth import LABELS_FILE

log = logging.getLogger(__name__)

NPZ_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    """Images (N×1×S×S float32 in [0, 1]) and binary labels (N, int64)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


@dataclass(frozen=True)
class SiteData:
    """What one site trains and validates on, plus its ingestion report."""

    train: ImageSet
    val: ImageSet
    rejected: dict[str, int] = field(default_factory=dict)


def preprocess(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Scale each 2-D image to [0, 1] and resize it to ``size``×``size``."""
    transform = Compose([
        EnsureChannelFirst(channel_dim="no_channel"),
        ScaleIntensity(minv=0.0, maxv=1.0),
        Resize((size, size), mode="area"),
    ])
    if not images:
        return torch.zeros((0, 1, size, size))
    return torch.stack([convert_to_tensor(transform(image), track_meta=False).float() for image in images])


def to_image_set(images: list[np.ndarray], labels: np.ndarray, size: int) -> ImageSet:
    return ImageSet(preprocess(images, size), torch.as_tensor(labels, dtype=torch.int64))


class TrainingSet(torch.utils.data.Dataset):
    """Tensor dataset with light, label-preserving augmentation per sample."""

    def __init__(self, data: ImageSet, *, augment: bool, seed: int) -> None:
        self.data = data
        self.augment = (
            RandAffine(prob=0.7, rotate_range=0.08, translate_range=(3, 3), scale_range=(0.06, 0.06),
                       padding_mode="border").set_random_state(seed)
            if augment else None
        )

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.data.images[index]
        if self.augment is not None:
            image = convert_to_tensor(self.augment(image), track_meta=False).float()
        return image, self.data.labels[index].float()


def _check_binary(labels: np.ndarray, origin: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DataError(f"{origin}: labels must be 0 or 1 (binary classification).")
    return labels.astype(np.int64)


def load_npz_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw images (N×H×W, float in [0, 1]) and labels of ``split`` in a MedMNIST npz."""
    if split not in NPZ_SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(NPZ_SPLITS)}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(f"The npz file has no '{split}_images'/'{split}_labels' arrays "
                                f"(found: {', '.join(sorted(keys))}).")
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    except DataError:
        raise
    except Exception as exc:  # zip, pickle and I/O errors all mean "not a usable npz"
        raise DataError(f"Cannot read the npz file ({type(exc).__name__}); check that it is a "
                        "MedMNIST-style .npz archive.") from exc
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.mean(axis=-1)
    if images.ndim != 3:
        raise DataError(f"'{split}_images' must be N×H×W grayscale; got shape {images.shape}.")
    scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1.0)
    return images.astype(np.float32) / scale, _check_binary(labels, f"'{split}_labels'")


def load_npz_shard(path: Path, *, site: int, sites: int, partition: str, seed: int,
                   size: int) -> SiteData:
    """One site's shard of an npz's train and val splits."""
    train_x, train_y = load_npz_split(path, "train")
    val_x, val_y = load_npz_split(path, "val")
    train_parts, val_parts = partition_indices([train_y, val_y], sites, partition, seed)
    train_idx, val_idx = train_parts[site], val_parts[site]
    return SiteData(
        train=ImageSet(preprocess(list(train_x[train_idx]), size), torch.as_tensor(train_y[train_idx])),
        val=ImageSet(preprocess(list(val_x[val_idx]), size), torch.as_tensor(val_y[val_idx])),
    )


def read_labels(labels_csv: Path) -> list[tuple[str, int]]:
    """Rows of (relative file, label) from a site's labels CSV."""
    try:
        with open(labels_csv, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise DataError("The labels CSV needs the columns 'file' and 'label'.")
            rows = [(row["file"], int(row["label"])) for row in reader]
    except OSError as exc:
        raise DataError(f"Cannot read the labels CSV ({exc.strerror}).") from exc
    except ValueError as exc:
        raise DataError("The labels CSV has a non-integer label.") from exc
    _check_binary(np.array([label for _, label in rows]), "labels CSV")
    return rows


def load_dicom_site(site_dir: Path, *, size: int, val_fraction: float = 0.25, seed: int = 0,
                    labels_csv: Path | None = None) -> SiteData:
    """Decode a site folder; bad files are counted by reason and skipped."""
    site_dir = Path(site_dir)
    rows = read_labels(labels_csv or site_dir / LABELS_FILE)
    images, labels, rejected = [], [], Counter()
    for relative, label in rows:
        try:
            images.append(read_image(site_dir / relative))
            labels.append(label)
        except RejectedFile as exc:
            rejected[exc.code] += 1
            log.warning("Skipped a file (%s): %s", exc.code, exc)
            log.debug("Skipped file: %s", relative)  # path stays in the site's own debug log
    if rejected:
        log.warning("Rejected %s of %s files: %s", sum(rejected.values()), len(rows), dict(rejected))
    train_idx, val_idx = stratified_split(np.array(labels, dtype=np.int64), val_fraction, seed)
    return SiteData(
        train=to_image_set([images[i] for i in train_idx], np.array(labels)[train_idx], size),
        val=to_image_set([images[i] for i in val_idx], np.array(labels)[val_idx], size),
        rejected=dict(rejected),
    )


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split into (train, val) index arrays."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * val_fraction))
        val.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
