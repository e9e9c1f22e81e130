"""Every model name builds, passes Opacus' validator and takes a real DP-SGD step on its own
per-sample gradient path; the U-Net's per-sample gradients are the true ones."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from fedscan.common.errors import ModelError
from fedscan.common.models.networks import build_model
from fedscan.common.models.private import made_private
from fedscan.common.models.registry import MODELS, get_model_spec
from fedscan.common.models.training import DpStep, training_loss


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_is_dp_compatible_and_trains_one_private_step(name: str) -> None:
    spec = get_model_spec(name)
    model = build_model(name, seed=0)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    depth = (spec.depth,) if spec.volumetric else ()  # a 3-D model takes 1×D×S×S volumes
    images = torch.rand(4, 1, *depth, spec.input_size, spec.input_size)
    segmentation = spec.task == "segmentation"
    labels = (images > 0.9).float() if segmentation else torch.tensor([0.0, 1.0, 0.0, 1.0])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=2
    )
    before = [p.detach().clone() for p in model.parameters()]
    with made_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loader,
        dp=DpStep(noise_multiplier=1.0, clip_norm=1.0),
        mode=spec.grad_sample_mode,
        views=1,
        device=torch.device("cpu"),
    ) as private:
        x, y = images[:2], labels[:2]
        logits = private.model(x)
        assert logits.shape == ((2, *images.shape[1:]) if segmentation else (2,))
        training_loss(spec.loss)(logits, y).backward()
        private.stage.after_backward()
        private.optimizer.step()
        assert len(private.history()) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_same_seed_same_weights_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, second = build_model("small-cnn", seed=7), build_model("small-cnn", seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(ModelError, match="small-cnn"):
        get_model_spec("vgg16")


@pytest.mark.parametrize(("name", "shape"), [("unet", (64, 64)), ("unet3d", (16, 16, 16))])
def test_unet_per_sample_gradients_under_opacus_equal_each_image_alone(
    name: str, shape: tuple[int, ...]
) -> None:
    """The clipping bound holds only if Opacus' per-sample gradients are right: the transposed
    convolutions (functorch inside hooks mode; 3-D ones too) and the per-image Dice loss
    included."""
    from opacus import GradSampleModule

    torch.manual_seed(0)
    images = torch.rand(3, 1, *shape)
    masks = (torch.rand(3, 1, *shape) > 0.95).float()
    loss = training_loss("dice-ce")
    model = build_model(name, seed=1)
    expected = []
    for index in range(3):
        model.zero_grad()
        loss(model(images[index : index + 1]), masks[index : index + 1]).backward()
        expected.append({name: p.grad.clone() for name, p in model.named_parameters()})
    wrapped = GradSampleModule(build_model(name, seed=1), loss_reduction="mean")
    loss(wrapped(images), masks).backward()
    for name, param in wrapped._module.named_parameters():
        for index in range(3):
            assert torch.allclose(
                param.grad_sample[index], expected[index][name], atol=1e-5, rtol=1e-3
            ), name


@pytest.mark.parametrize(
    ("name", "mode"), [("resnet18", "ew"), ("small-cnn", "hooks"), ("small-cnn", "fused")]
)
def test_an_empty_poisson_batch_is_a_noise_only_step_and_counted(name: str, mode: str) -> None:
    from fedscan.common.models.private import empty_step, made_private
    from fedscan.common.models.training import DpStep

    model = build_model(name, seed=0)
    data = torch.utils.data.TensorDataset(torch.rand(4, 1, 64, 64), torch.zeros(4))
    with made_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.utils.data.DataLoader(data, batch_size=2),
        dp=DpStep(noise_multiplier=1.0, clip_norm=1.0),
        mode=mode,
        views=1,
        device=torch.device("cpu"),
    ) as private:
        before = [p.detach().clone() for p in model.parameters()]
        empty_step(
            private.stage, private.optimizer
        )  # a forward pass of 0 images would fail for expanded weights
        history = private.history()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(history) == 1  # the step is accounted like any other
