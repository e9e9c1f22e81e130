"""Training-time augmentation: a light, label-preserving random affine per sample (MONAI).

Volumes (N×1×D×S×S) get the 3-D affine: a few voxels of shift, a small turn in the axial plane
and ±6 % scale. For segmentation one random affine moves an image and its mask together (the mask
by nearest neighbour), so they stay aligned.
"""

from __future__ import annotations

from typing import Any

import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import DataError

_AFFINE: dict[str, Any] = {
    "prob": 0.7,
    "rotate_range": 0.08,
    "translate_range": (3, 3),
    "scale_range": (0.06, 0.06),
    "padding_mode": "border",
}


# Canonical volume axes are z, y, x (inferior → superior first): MONAI's first rotation angle
# turns the axial (y, x) plane, as a patient lies a little askew on the table.
_AFFINE_3D: dict[str, Any] = {
    "prob": 0.7,
    "rotate_range": (0.08, 0.0, 0.0),
    "translate_range": (1, 2, 2),
    "scale_range": (0.06, 0.06, 0.06),
    "padding_mode": "border",
}


class TrainingSet(torch.utils.data.Dataset):
    """Tensor dataset with light, label-preserving augmentation per sample: (image, label), or for
    segmentation (image, mask) with one random affine applied to both (the mask by nearest
    neighbour)."""

    def __init__(
        self,
        data: ImageSet,
        *,
        augment: bool,
        seed: int,
        segmentation: bool = False,
        integer_labels: bool = False,
    ) -> None:
        from monai.transforms import RandAffine, RandAffined

        if segmentation and data.masks is None:
            raise DataError(
                "Segmentation trains on masks, and these images have none; load the site with "
                "masks."
            )
        self.data, self.segmentation = data, segmentation
        # Multiclass and multilabel labels (a class index, a bit set of findings) stay integers:
        # float32 holds a bit set exactly only up to 24 findings.
        self.integer_labels = integer_labels
        self.augment: Any = None  # MONAI's RandAffine, or RandAffined for an image and its mask
        ranges = _AFFINE_3D if data.images.ndim == 5 else _AFFINE
        if augment and not segmentation:
            self.augment = RandAffine(**ranges).set_random_state(seed)
        elif augment:
            self.augment = RandAffined(
                keys=("image", "mask"), mode=("bilinear", "nearest"), **ranges
            ).set_random_state(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.utils import convert_to_tensor

        image = self.data.images[index]
        if self.segmentation:
            assert self.data.masks is not None  # checked on construction
            pair = {"image": image, "mask": self.data.masks[index]}
            if self.augment is not None:
                pair = self.augment(pair)
            return (
                convert_to_tensor(pair["image"], track_meta=False).float(),
                convert_to_tensor(pair["mask"], track_meta=False).float(),
            )
        if self.augment is not None:
            image = convert_to_tensor(self.augment(image), track_meta=False).float()
        label = self.data.labels[index]
        return image, label if self.integer_labels else label.float()
