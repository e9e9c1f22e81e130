"""Training-time augmentation: a light, label-preserving random affine per sample (MONAI), and
for classification optionally the intensities another scanner would give (gamma, contrast,
brightness, Gaussian noise, blur; ``intensity``), clamped back to [0, 1].

Volumes (N×1×D×S×S) get the 3-D affine: a few voxels of shift, a small turn in the axial plane
and ±6 % scale. For segmentation one random affine moves an image and its mask together (the mask
by nearest neighbour), so they stay aligned.

With ``views`` K > 1 (augmentation multiplicity, De et al. 2022) a classification sample is K
independently augmented views of one image, stacked K×1×S×S, and one label: training averages
their gradients into that image's one gradient before DP clipping.
"""

from __future__ import annotations

from typing import Any

import torch

from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import DataError

AFFINE_2D: dict[str, Any] = {
    "prob": 0.7,
    "rotate_range": 0.08,
    "translate_range": (3, 3),
    "scale_range": (0.06, 0.06),
    "padding_mode": "border",
}
# Canonical volume axes are z, y, x (inferior → superior first): MONAI's first rotation angle
# turns the axial (y, x) plane, as a patient lies a little askew on the table.
AFFINE_3D: dict[str, Any] = {
    "prob": 0.7,
    "rotate_range": (0.08, 0.0, 0.0),
    "translate_range": (1, 2, 2),
    "scale_range": (0.06, 0.06, 0.06),
    "padding_mode": "border",
}
# Scanner-like intensity changes, in the order they apply: (probability, range) each; one image
# in ~4 is left unchanged. Gamma 0.7–1.5 and contrast ±30 % cover the exposure and windowing
# differences between devices; noise σ ≤ 0.05 and a blur of ≤ 1 pixel their detectors and
# reconstruction. Batched on a device by :mod:`fedscan.common.data.batch_augment`.
INTENSITY: dict[str, tuple[float, Any]] = {
    "gamma": (0.5, (0.7, 1.5)),
    "contrast": (0.5, 0.3),
    "brightness": (0.5, 0.1),
    "noise": (0.3, 0.05),
    "blur": (0.3, (0.25, 1.0)),
}


def _intensity(seed: int) -> Any:
    """MONAI's chain of :data:`INTENSITY`, for one image at a time."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleIntensityFixedMean,
        RandShiftIntensity,
    )

    (p_gamma, gamma), (p_contrast, contrast) = INTENSITY["gamma"], INTENSITY["contrast"]
    (p_bright, bright), (p_noise, noise) = INTENSITY["brightness"], INTENSITY["noise"]
    p_blur, blur = INTENSITY["blur"]
    return Compose(
        [
            RandAdjustContrast(prob=p_gamma, gamma=gamma),
            RandScaleIntensityFixedMean(prob=p_contrast, factors=contrast),
            RandShiftIntensity(prob=p_bright, offsets=bright),
            RandGaussianNoise(prob=p_noise, std=noise),
            RandGaussianSmooth(prob=p_blur, sigma_x=blur, sigma_y=blur),
        ]
    ).set_random_state(seed)


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
        intensity: bool = False,
        views: int = 1,
    ) -> None:
        from monai.transforms import RandAffine, RandAffined

        if segmentation and data.masks is None:
            raise DataError(
                "Segmentation trains on masks, and these images have none; load the site with "
                "masks."
            )
        self.data, self.segmentation = data, segmentation
        if views > 1 and (segmentation or not augment):
            raise DataError("Several views of an image need augment on and a classification task.")
        self.views = views
        # Multiclass and multilabel labels (a class index, a bit set of findings) stay integers:
        # float32 holds a bit set exactly only up to 24 findings.
        self.integer_labels = integer_labels
        self.augment: Any = None  # MONAI's RandAffine, or RandAffined for an image and its mask
        ranges = AFFINE_3D if data.images.ndim == 5 else AFFINE_2D
        self.intensity: Any = None
        if augment and not segmentation:
            self.augment = RandAffine(**ranges).set_random_state(seed)
            self.intensity = _intensity((seed + 1) % 2**32) if intensity else None
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
        if self.views > 1:
            image = torch.stack([self._augmented(image) for _ in range(self.views)])
        else:
            image = self._augmented(image)
        label = self.data.labels[index]
        return image, label if self.integer_labels else label.float()

    def _augmented(self, image: torch.Tensor) -> torch.Tensor:
        from monai.utils import convert_to_tensor

        if self.augment is not None:
            image = convert_to_tensor(self.augment(image), track_meta=False).float()
        if self.intensity is not None:
            image = convert_to_tensor(self.intensity(image), track_meta=False).float().clamp(0, 1)
        return image
