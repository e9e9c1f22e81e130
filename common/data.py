"""Site datasets: a folder of images with a labels CSV, or a MedMNIST-style ``.npz``.

Folders go through :mod:`fedscan.common.ingest` (decode-once cache, coded
rejections) and a patient-level split; npz arrays through MONAI transforms
(intensity scaling, resize to the model's input size). Both end as tensors.
Training-time augmentation is applied per sample by :class:`TrainingSet`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedscan.common.decode_pool import PoolSettings
from fedscan.common.dicom import DecodeOptions
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.ingest import IngestSettings, Samples, ingest_site
from fedscan.common.labels import LabelSpec
from fedscan.common.partition import partition_indices

log = logging.getLogger(__name__)

NPZ_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    """Images (N×1×S×S float32 in [0, 1]), binary labels (N, int64), and optionally each image's
    local key (relative path, ``#frame`` for multi-frame files) — for the site's own audit only.
    Segmentation: ``masks`` N×1×S×S in {0, 1}, and each label says whether the mask marks anything."""

    images: torch.Tensor
    labels: torch.Tensor
    keys: tuple[str, ...] = ()
    masks: torch.Tensor | None = None

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
    from monai.transforms import Compose, EnsureChannelFirst, Resize, ScaleIntensity
    from monai.utils import convert_to_tensor

    transform = Compose([
        EnsureChannelFirst(channel_dim="no_channel"),
        ScaleIntensity(minv=0.0, maxv=1.0),
        Resize((size, size), mode="area"),
    ])
    if not images:
        return torch.zeros((0, 1, size, size))
    return torch.stack([convert_to_tensor(transform(image), track_meta=False).float() for image in images])


_AFFINE = {"prob": 0.7, "rotate_range": 0.08, "translate_range": (3, 3), "scale_range": (0.06, 0.06),
           "padding_mode": "border"}


class TrainingSet(torch.utils.data.Dataset):
    """Tensor dataset with light, label-preserving augmentation per sample: (image, label), or for
    segmentation (image, mask) with one random affine applied to both (the mask by nearest neighbour)."""

    def __init__(self, data: ImageSet, *, augment: bool, seed: int, segmentation: bool = False) -> None:
        from monai.transforms import RandAffine, RandAffined

        if segmentation and data.masks is None:
            raise DataError("Segmentation trains on masks, and these images have none; load the site with masks.")
        self.data, self.segmentation = data, segmentation
        self.augment = None
        if augment and not segmentation:
            self.augment = RandAffine(**_AFFINE).set_random_state(seed)
        elif augment:
            self.augment = RandAffined(keys=("image", "mask"), mode=("bilinear", "nearest"),
                                       **_AFFINE).set_random_state(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.utils import convert_to_tensor

        image = self.data.images[index]
        if self.segmentation:
            pair = {"image": image, "mask": self.data.masks[index]}
            if self.augment is not None:
                pair = self.augment(pair)
            return (convert_to_tensor(pair["image"], track_meta=False).float(),
                    convert_to_tensor(pair["mask"], track_meta=False).float())
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


def load_site(site_dir: Path, *, size: int, labels: LabelSpec | None = None,
              decode: DecodeOptions | None = None, pool: PoolSettings | None = None, cache_dir: str = "",
              val_fraction: float = 0.25, seed: int = 0, masks: bool = False) -> SiteData:
    """Ingest a site folder (see :mod:`fedscan.common.ingest`) and split it by patient; ``masks``:
    segmentation, every image with its mask.

    Raises :class:`DataError` when not one file is usable; the message holds counts only.
    """
    settings = IngestSettings(size, decode or DecodeOptions(), pool or PoolSettings(), cache_dir)
    samples, report = ingest_site(Path(site_dir), labels or LabelSpec(), settings, masks=masks)
    if report.rejected:
        log.warning("Rejected %s of %s files: %s", report.rejected, len(report.records),
                    report.rejected_by_reason())
    if len(samples.labels) == 0:
        raise DataError(f"No usable image at this site: 0 of {len(report.records)} files accepted "
                        f"(rejected: {report.rejected_by_reason() or 'none found'}). Run "
                        "`fedscan data check` on the site folder for the reasons.")
    train_idx, val_idx = patient_split(samples.labels, samples.groups, val_fraction, seed)
    return SiteData(
        train=_subset(samples, train_idx), val=_subset(samples, val_idx),
        rejected=report.rejected_by_reason(),
    )


def _subset(samples: Samples, indices: np.ndarray) -> ImageSet:
    masks = None if samples.masks is None else torch.from_numpy(samples.masks[indices])
    return ImageSet(torch.from_numpy(samples.images[indices]), torch.from_numpy(samples.labels[indices]),
                    tuple(samples.keys[i] for i in indices), masks)


def patient_split(labels: np.ndarray, groups: Sequence[str], val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) indices with no patient on both sides.

    Patients are stratified by their highest label and ordered by a seeded hash
    of their identifier, so adding new patients later leaves existing ones on
    their side. With at least two patients in a class, each side gets one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError("val_fraction must be in [0, 1).")
    patient_label: dict[str, int] = {}
    for group, label in zip(groups, labels.tolist()):
        patient_label[group] = max(label, patient_label.get(group, 0))
    val_groups: set[str] = set()
    for label in sorted(set(patient_label.values())):
        members = sorted((g for g, lab in patient_label.items() if lab == label), key=lambda group: _patient_rank(seed, group))
        cut = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            cut = min(max(cut, 1), len(members) - 1)
        val_groups.update(members[:cut])
    in_val = np.array([group in val_groups for group in groups], dtype=bool)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def _patient_rank(seed: int, group: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
