"""The classical pipeline: denoise → equalise → ROI mask and crop → HOG or LBP features.

Each step is a small MONAI-style transform (a callable on a 2-D float image in
[0, 1]) built on SciPy / scikit-image implementations, composed with MONAI's
``Compose``. Settings come from the run config key ``classical``, a comma list
such as ``median=3,gaussian=0,equalize=clahe,roi=otsu,hog-cell=8,lbp-grid=4``;
every key has a default. The feature vector of an image depends on nothing
but that image and these settings, so a site computes it locally.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from fedscan.common.errors import ConfigError

EQUALIZERS = ("none", "hist", "clahe")
ROI_METHODS = ("none", "otsu")


@dataclass(frozen=True)
class ClassicalConfig:
    """Preprocessing and feature settings (run config ``classical``)."""

    median: int = 3  # median filter size in pixels (0 = off): removes salt-and-pepper noise
    gaussian: float = 0.0  # Gaussian filter σ in pixels (0 = off)
    equalize: str = "clahe"  # none | hist | clahe
    roi: str = "otsu"  # none | otsu: threshold, keep the largest component, crop to it
    hog_orientations: int = 9
    hog_cell: int = 8  # pixels per HOG cell
    hog_block: int = 2  # cells per HOG block (each block is L2-Hys normalised)
    lbp_points: int = 8
    lbp_radius: float = 1.0
    lbp_grid: int = (
        4  # LBP histograms on a grid × grid layout, concatenated (keeps where texture is)
    )
    stats_noise: float = (
        10.0  # DP noise multiplier of the federated feature statistics (one release)
    )

    def __post_init__(self) -> None:
        if self.median < 0 or self.gaussian < 0:
            raise ConfigError("classical median and gaussian must be ≥ 0 (0 turns the filter off).")
        if self.equalize not in EQUALIZERS:
            raise ConfigError(f"classical equalize must be one of {', '.join(EQUALIZERS)}.")
        if self.roi not in ROI_METHODS:
            raise ConfigError(f"classical roi must be one of {', '.join(ROI_METHODS)}.")
        if (
            min(
                self.hog_orientations, self.hog_cell, self.hog_block, self.lbp_points, self.lbp_grid
            )
            < 1
        ):
            raise ConfigError("classical HOG and LBP sizes must be ≥ 1.")
        if self.stats_noise <= 0:
            raise ConfigError(
                "classical stats-noise must be positive: under DP the statistics need noise."
            )

    @classmethod
    def parse(cls, text: str) -> ClassicalConfig:
        """``key=value`` pairs separated by commas (kebab-case keys); empty text gives the
        defaults."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, raw = item.partition("=")
            if key not in known or not raw:
                raise ConfigError(
                    f"Unknown classical setting {item!r}; use key=value with keys "
                    f"{', '.join(known)}."
                )
            kind = known[key].type
            values[known[key].name] = (
                raw if kind == "str" else (int(raw) if kind == "int" else float(raw))
            )
        return replace(cls(), **values)


class MedianFilter:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from scipy.ndimage import median_filter

        return median_filter(image, size=self.size, mode="reflect")


class GaussianFilter:
    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.filters import gaussian

        return gaussian(image, sigma=self.sigma, preserve_range=True)


class Equalize:
    """Histogram equalisation, global (``hist``) or contrast-limited adaptive (``clahe``)."""

    def __init__(self, method: str) -> None:
        self.method = method

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage import exposure

        if np.ptp(image) == 0:
            return image  # a flat image has no histogram to spread
        if self.method == "hist":
            return exposure.equalize_hist(image)
        return exposure.equalize_adapthist(np.clip(image, 0.0, 1.0))


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """The largest connected region above Otsu's threshold (all True for a flat image)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label

    if np.ptp(image) == 0:
        return np.ones(image.shape, dtype=bool)
    components = label(image > threshold_otsu(image))
    if components.max() == 0:
        return np.ones(image.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # background
    return components == int(np.argmax(sizes))


class CropToRoi:
    """Crop to the bounding box of the Otsu region, resized back to the input size."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.transform import resize

        rows, cols = np.nonzero(otsu_mask(image))
        cropped = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        if cropped.shape == image.shape or min(cropped.shape) < 4:
            return image
        return resize(cropped, image.shape, order=1, anti_aliasing=True, preserve_range=True)


class HogFeatures:
    def __init__(self, config: ClassicalConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import hog

        c = self.config
        return hog(
            image,
            orientations=c.hog_orientations,
            pixels_per_cell=(c.hog_cell, c.hog_cell),
            cells_per_block=(c.hog_block, c.hog_block),
            block_norm="L2-Hys",
            feature_vector=True,
        )


class LbpFeatures:
    """Uniform LBP codes, as normalised histograms (P + 2 bins) on a grid of image regions."""

    def __init__(self, config: ClassicalConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import local_binary_pattern

        c = self.config
        codes = local_binary_pattern(
            np.round(np.clip(image, 0, 1) * 255).astype(np.uint8),
            c.lbp_points,
            c.lbp_radius,
            method="uniform",
        )
        bins = c.lbp_points + 2
        histograms = []
        for band in np.array_split(codes, c.lbp_grid, axis=0):
            for region in np.array_split(band, c.lbp_grid, axis=1):
                counts = np.bincount(region.astype(np.int64).ravel(), minlength=bins)[:bins]
                histograms.append(counts / max(region.size, 1))
        return np.concatenate(histograms)


def preprocessing(config: ClassicalConfig) -> list[Any]:
    """The configured preprocessing transforms, in order."""
    steps: list[Any] = []
    if config.median:
        steps.append(MedianFilter(config.median))
    if config.gaussian:
        steps.append(GaussianFilter(config.gaussian))
    if config.equalize != "none":
        steps.append(Equalize(config.equalize))
    if config.roi == "otsu":
        steps.append(CropToRoi())
    return steps


def feature_pipeline(kind: str, config: ClassicalConfig) -> Any:
    """Preprocessing then ``hog`` or ``lbp`` features, as one MONAI ``Compose``."""
    from monai.transforms import Compose

    extractor = HogFeatures(config) if kind == "hog" else LbpFeatures(config)
    return Compose([*preprocessing(config), extractor])
