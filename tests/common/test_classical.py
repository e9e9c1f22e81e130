"""The classical pipeline: transforms with known answers, feature shapes, federated
standardisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedscan.common.errors import ConfigError
from fedscan.common.models.classical import (
    ClassicalConfig,
    CropToRoi,
    Equalize,
    GaussianFilter,
    HogFeatures,
    LbpFeatures,
    MedianFilter,
    feature_pipeline,
    otsu_mask,
)
from fedscan.common.models.classical_model import hinge_loss
from fedscan.common.models.feature_stats import norm_bound, sensitivity, site_sums, standardisation
from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import get_model_spec
from fedscan.common.privacy import calibrate_noise, epsilon_spent

DEFAULTS = ClassicalConfig()


def _two_level() -> np.ndarray:
    """Background 0.2; a 20×24 square at 0.8 and a 3×3 speck at 0.8 elsewhere."""
    image = np.full((64, 64), 0.2)
    image[10:30, 20:44] = 0.8
    image[50:53, 5:8] = 0.8
    return image


def test_otsu_keeps_the_largest_bright_component_of_a_two_level_image() -> None:
    mask = otsu_mask(_two_level())
    expected = np.zeros((64, 64), dtype=bool)
    expected[10:30, 20:44] = True
    assert np.array_equal(
        mask, expected
    )  # the speck is above threshold but not the largest component
    assert otsu_mask(np.full((8, 8), 0.3)).all()  # a flat image has nothing to separate


def test_median_filter_removes_salt_and_pepper_noise() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 0.5)
    noisy = image.copy()
    spots = rng.choice(64 * 64, size=200, replace=False)  # ~5 %, isolated enough for a 3×3 median
    noisy.flat[spots[:100]], noisy.flat[spots[100:]] = 0.0, 1.0
    cleaned = MedianFilter(3)(noisy)
    assert np.array_equal(cleaned, image)
    assert (noisy != 0.5).mean() > 0.04


def test_gaussian_filter_keeps_a_flat_image_and_spreads_an_impulse() -> None:
    assert np.allclose(GaussianFilter(1.5)(np.full((32, 32), 0.4)), 0.4)
    impulse = np.zeros((33, 33))
    impulse[16, 16] = 1.0
    blurred = GaussianFilter(2.0)(impulse)
    assert blurred[16, 16] < 0.1 and math.isclose(blurred.sum(), 1.0, rel_tol=1e-3)
    assert blurred[16, 18] == pytest.approx(blurred[18, 16]) and blurred[16, 18] < blurred[16, 17]


def test_equalisation_spreads_a_narrow_histogram_and_keeps_the_order() -> None:
    image = 0.4 + 0.1 * np.linspace(0, 1, 64 * 64).reshape(64, 64)  # values in [0.4, 0.5] only
    for method in ("hist", "clahe"):
        out = Equalize(method)(image)
        assert out.min() >= 0 and out.max() <= 1
        assert np.ptp(out) > 3 * np.ptp(image)
    flat = Equalize("hist")(image).ravel()
    assert np.all(np.diff(flat) >= -1e-12)  # global equalisation is monotone


def test_crop_to_roi_fills_the_frame_with_the_region() -> None:
    cropped = CropToRoi()(_two_level())
    assert cropped.shape == (64, 64)
    assert cropped.mean() > 0.75  # the 20×24 bright square now fills the image
    assert np.array_equal(CropToRoi()(np.full((64, 64), 0.5)), np.full((64, 64), 0.5))


def test_feature_shapes_and_bounds() -> None:
    image = np.random.default_rng(1).random((64, 64))
    hog = HogFeatures(DEFAULTS)(image)
    assert hog.shape == (7 * 7 * 2 * 2 * 9,)  # 8-pixel cells, 2×2-cell blocks, 9 orientations
    assert np.linalg.norm(hog) <= norm_bound("hog", DEFAULTS, hog.shape[0]) + 1e-6
    lbp = LbpFeatures(DEFAULTS)(image)
    assert lbp.shape == (4 * 4 * (8 + 2),)  # 4×4 regions, P + 2 uniform codes each
    assert np.allclose(lbp.reshape(16, 10).sum(axis=1), 1.0)
    small = ClassicalConfig.parse("hog-cell=16,hog-block=1,lbp-grid=2,lbp-points=16,lbp-radius=2")
    assert feature_pipeline("hog", small)(image).shape == (4 * 4 * 9,)
    assert feature_pipeline("lbp", small)(image).shape == (2 * 2 * 18,)


def test_classical_settings_are_validated() -> None:
    assert ClassicalConfig.parse("") == DEFAULTS
    assert ClassicalConfig.parse("median=0,equalize=hist").equalize == "hist"
    for bad in ("colour=red", "equalize=sharpen", "hog-cell=0", "median", "stats-noise=0"):
        with pytest.raises(ConfigError):
            ClassicalConfig.parse(bad)


def test_federated_standardisation_equals_pooled_standardisation_without_dp() -> None:
    rng = np.random.default_rng(2)
    sites = [rng.random((n, 50)) * 0.2 for n in (17, 40, 9)]  # within the clipping bounds
    clip = 2.0
    mean, scale = standardisation(
        [site_sums(f, clip_norm=clip, noise_multiplier=0.0) for f in sites], clip_norm=clip
    )
    pooled = np.concatenate(sites)
    assert np.allclose(mean, pooled.mean(axis=0), atol=1e-6)
    assert np.allclose(scale, pooled.std(axis=0), atol=1e-5)


def test_dp_feature_sums_are_noised_with_the_stated_sensitivity() -> None:
    features = np.zeros((1000, 3))
    sums = site_sums(features, clip_norm=1.5, noise_multiplier=4.0, rng=np.random.default_rng(3))
    assert sums.count == 1000 and sums.total.shape == (3,)
    draws = np.stack(
        [site_sums(features, clip_norm=1.5, noise_multiplier=4.0).total for _ in range(400)]
    )
    assert draws.std() == pytest.approx(4.0 * sensitivity(1.5), rel=0.1)
    assert sensitivity(1.5) == pytest.approx(math.sqrt(2) * 1.5)


def test_the_classical_models_are_linear_opacus_compatible_and_use_the_right_loss() -> None:
    for name in ("hog-svm", "hog-logreg", "lbp-svm", "lbp-logreg"):
        model = build_model(name, seed=0)  # runs Opacus' validator
        assert [n for n, _ in model.named_parameters()] == ["linear.weight", "linear.bias"]
        assert model(torch.rand(3, 1, 64, 64)).shape == (3,)
        assert get_model_spec(name).loss == ("hinge" if name.endswith("svm") else "bce")
    margins, labels = torch.tensor([2.0, 0.5, -0.5, 0.3]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert hinge_loss(margins, labels).item() == pytest.approx((0 + 0.5 + 0.5 + 1.3) / 4)


def test_a_fixed_extra_release_is_planned_for_in_the_noise_calibration() -> None:
    plain = calibrate_noise(target_epsilon=8.0, delta=1e-5, sample_rate=0.1, total_steps=300)
    extra = [(10.0, 1.0, 1)]
    sigma = calibrate_noise(
        target_epsilon=8.0, delta=1e-5, sample_rate=0.1, total_steps=300, extra=extra
    )
    assert sigma > plain
    assert epsilon_spent([*extra, (sigma, 0.1, 300)], 1e-5) == pytest.approx(8.0, abs=0.05)
