"""common/explain: the occlusion map against a one-patch-at-a-time reference, the pointing game's
arithmetic, the review order, the settings' checks and Grad-CAM's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import ConfigError, ModelError
from fedscan.common.explain import ExplainSettings, ImageExplanation, review_order
from fedscan.common.explain.gradcam import gradcam_maps, unit_max
from fedscan.common.explain.occlusion import occlusion_map, patch_starts
from fedscan.common.explain.pointing import mass_inside, peak_inside, pointing_scores
from fedscan.common.explain.targets import ClassScores, check_explainable, target_layer
from fedscan.common.models.networks import build_model


class Weighted(nn.Module):
    """Two linear scores of a 1 × 6 × 6 image: exact occlusion drops are easy to write out."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.arange(72, dtype=torch.float32).reshape(2, 36) / 36)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weights.T


def test_patch_starts_cover_the_border() -> None:
    assert patch_starts(6, 4, 2) == [0, 2]
    assert patch_starts(7, 4, 2) == [0, 2, 3]
    assert patch_starts(3, 4, 2) == [0]


def test_occlusion_equals_a_patch_at_a_time_reference() -> None:
    # Prepare
    torch.manual_seed(0)
    model, image = ClassScores(Weighted(), "multilabel"), torch.rand(1, 6, 6)
    # Execute
    found = occlusion_map(model, image, patch=4, stride=2, batch_size=3)
    # Assert: each pixel's mean drop over the patches covering it, computed one patch at a time
    total, covered = np.zeros((2, 6, 6)), np.zeros((6, 6))
    base = model(image[None])[0].detach().numpy()
    for top in (0, 2):
        for left in (0, 2):
            occluded = image.clone()
            occluded[:, top : top + 4, left : left + 4] = image.mean()
            drop = base - model(occluded[None])[0].detach().numpy()
            total[:, top : top + 4, left : left + 4] += drop[:, None, None]
            covered[top : top + 4, left : left + 4] += 1
    np.testing.assert_allclose(found, total / covered, rtol=1e-5, atol=1e-6)


def test_unit_max_clips_and_keeps_an_empty_map_empty() -> None:
    maps = np.array([[[-1.0, 2.0], [0.0, 4.0]], [[-1.0, -2.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(unit_max(maps), [[[0, 0.5], [0, 1]], [[0, 0], [0, 0]]])


def test_mass_and_peak_inside_the_region() -> None:
    maps = np.array([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    regions = np.array([[[0, 1], [0, 0]], [[1, 0], [0, 0]]])
    np.testing.assert_allclose(mass_inside(maps, regions), [0.75, np.nan])
    assert peak_inside(maps, regions).tolist() == [True, True]  # an empty map peaks at 0, 0


def _record(key: str, score: float, truth: tuple[str, ...], predicted: tuple[str, ...]):
    return ImageExplanation(key, np.zeros((2, 2)), ("finding",), (score,), truth, predicted)


def test_review_order_puts_false_positives_then_false_negatives_first() -> None:
    records = [
        _record("tp", 0.9, ("finding",), ("finding",)),
        _record("fn", 0.2, ("finding",), ()),
        _record("tn", 0.1, (), ()),
        _record("fp-low", 0.6, (), ("finding",)),
        _record("fp-high", 0.8, (), ("finding",)),
    ]
    assert [r.key for r in review_order(records)] == ["fp-high", "fp-low", "fn", "tp", "tn"]
    assert records[1].errors == ("FN",) and records[0].errors == ()


def test_settings_refuse_unknown_methods_and_bad_patches() -> None:
    assert ExplainSettings.parse(" GradCAM++, occlusion").methods == ("gradcam++", "occlusion")
    with pytest.raises(ConfigError, match="Unknown explanation method"):
        ExplainSettings.parse("saliency")
    with pytest.raises(ConfigError, match="stride"):
        ExplainSettings(patch=4, stride=5)


def test_target_layers_and_models_without_one() -> None:
    assert target_layer("small-cnn") == "model.features.10"
    check_explainable("unet")  # its map is its mask
    for name in ("hog-svm", "cnn3d"):
        with pytest.raises(ModelError, match="no 2-D convolution"):
            check_explainable(name)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_gives_one_unit_map_per_class_and_leaves_the_model_alone(method: str) -> None:
    model = build_model("small-cnn", seed=0, outputs=3)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.rand(5, 1, 64, 64)
    maps = gradcam_maps(
        ClassScores(model, "multiclass"),
        images,
        layer=target_layer("small-cnn"),
        classes=3,
        method=method,
        batch_size=2,
    )
    assert maps.shape == (5, 3, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(module._forward_hooks for module in model.modules())


def test_pointing_scores_only_images_with_a_finding() -> None:
    masks = torch.zeros(4, 1, 64, 64)
    masks[:2, :, 10:20, 10:20] = 1
    images = ImageSet(torch.rand(4, 1, 64, 64), torch.tensor([1, 1, 0, 0]), masks=masks)
    scores = pointing_scores(
        build_model("small-cnn", seed=1),
        images,
        model_name="small-cnn",
        label="random",
        settings=ExplainSettings(patch=16, stride=16),
    )
    assert [(s.method, s.scored + s.massless) for s in scores] == [
        ("gradcam", 2),
        ("occlusion", 2),
    ]
    assert all(0 <= s.mass <= 1 for s in scores if s.scored)
