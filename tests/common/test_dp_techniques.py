"""DP training techniques of issue 21: augmentation multiplicity (views averaged into one gradient
per image before clipping), weight standardisation (exact per-sample gradients), the cosine
learning-rate schedule over rounds; and their settings' validation (FedAvgM: tests/server)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule

from fedscan.common.config import RunConfig
from fedscan.common.data.augment import TrainingSet
from fedscan.common.data.imageset import ImageSet
from fedscan.common.errors import ConfigError, DataError
from fedscan.common.models.networks import build_model
from fedscan.common.models.private import average_views
from fedscan.common.models.training import DpStep, scheduled, train_local, training_loss
from fedscan.common.training_settings import TrainSettings, check_training


def _site(n: int = 32) -> ImageSet:
    images = torch.rand(n, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    return ImageSet(images, torch.arange(n) % 2)


def _per_image_gradients(name: str, images: torch.Tensor, labels: torch.Tensor) -> list:
    """Each image's gradient of its mean loss over its views (B×K×…), one plain backward each."""
    model, loss = build_model(name, seed=0), training_loss("bce")
    grads = []
    for views, label in zip(images, labels, strict=True):
        model.zero_grad()
        loss(model(views), label.repeat(len(views))).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


@pytest.mark.parametrize("name", ["small-cnn", "small-cnn-ws"])  # hooks; functorch for WS
def test_views_average_into_exactly_one_gradient_per_image_before_clipping(name: str) -> None:
    # Setup: 3 images × 2 views each
    images = torch.rand(3, 2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0.0, 1.0, 1.0])
    model = build_model(name, seed=0)
    private = GradSampleModule(model)
    # Execute: the training step's reshaping, Opacus' per-sample gradients, then the average
    logits = private(images.flatten(0, 1))
    training_loss("bce")(logits, labels.repeat_interleave(2)).backward()
    average_views(private, 2)
    # Assert: one row per image, equal to that image's gradient of its mean view loss
    expected = _per_image_gradients(name, images, labels)
    for index, parameter in enumerate(model.parameters()):
        assert parameter.grad_sample.shape[0] == 3
        for image in range(3):
            assert torch.allclose(parameter.grad_sample[image], expected[image][index], atol=1e-5)


def test_a_training_sample_is_k_distinct_views_of_one_image_with_one_label() -> None:
    data = TrainingSet(_site(), augment=True, seed=5, views=4)
    views, label = data[1]
    assert views.shape == (4, 1, 64, 64) and float(label) == 1.0
    assert sum(not torch.equal(views[0], views[k]) for k in range(1, 4)) >= 2  # prob 0.7 each
    with pytest.raises(DataError, match="augment on"):
        TrainingSet(_site(), augment=False, seed=5, views=4)


def test_views_under_dp_cost_no_extra_steps_or_privacy() -> None:
    # Setup
    dp = DpStep(noise_multiplier=1.0, clip_norm=1.0)
    outcomes = {}
    for views in (1, 3):
        settings = TrainSettings(augment_views=views, batch_size=8, local_epochs=1)
        model = build_model("small-cnn", seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        # Execute
        outcomes[views] = train_local(model, _site(), settings, dp=dp, device=torch.device("cpu"))
        # Assert: it trained
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # One Poisson step per batch of images, not of views: the accountant sees the same release.
    assert outcomes[1].history == outcomes[3].history == [(1.0, 0.25, 4)]
    assert np.isfinite(outcomes[3].loss)


def test_the_cosine_schedule_falls_from_the_rate_to_a_tenth_over_the_rounds() -> None:
    cosine = TrainSettings(learning_rate=0.1, lr_schedule="cosine")
    rates = [scheduled(cosine, r, 5).learning_rate for r in range(1, 7)]  # round 6: cross-site
    assert rates[0] == pytest.approx(0.1) and rates[4] == pytest.approx(0.01)
    assert rates[5] == pytest.approx(0.01)  # the fine-tune after the last round keeps its rate
    assert all(a > b for a, b in zip(rates[:4], rates[1:5], strict=True))
    constant = TrainSettings(learning_rate=0.1)
    assert scheduled(constant, 3, 5) is constant
    assert scheduled(cosine, 1, 1).learning_rate == 0.1  # one round: nothing to schedule


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (TrainSettings(augment_views=2, augment=False), "augment = true"),
        (TrainSettings(augment_views=2, task="segmentation", model="unet"), "not segmentation"),
        (TrainSettings(augment_views=0), "1 to 16"),
        (TrainSettings(augment_views=17), "1 to 16"),
        (TrainSettings(lr_schedule="step"), "constant, cosine"),
    ],
)
def test_settings_that_cannot_train_say_what_to_change(train: TrainSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_training(train)


def test_server_momentum_must_be_below_one() -> None:
    with pytest.raises(ConfigError, match="server-momentum"):
        RunConfig(strategy="fedavgm", server_momentum=1.0)
