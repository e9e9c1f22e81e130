"""fedscan's fused per-sample path (``grad_sample_mode = "fused"``) against Opacus' reference.

The fused path must give the same clipped gradient sum as Opacus' hooks (``GradSampleModule`` +
``DPOptimizer.clip_and_accumulate``), and with the same noise generator the same noised, scaled
gradient, for every layer type it has a rule for; a layer without a rule is refused by name.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from functools import partial

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from fedscan.common.models import persample
from fedscan.common.models.networks import build_model
from fedscan.common.models.persample import PerSampleClipper, supports
from fedscan.common.models.persample.optimizer import FusedDPOptimizer
from fedscan.common.models.private import FUSED, padded_forward
from fedscan.common.models.registry import MODELS, get_model_spec
from fedscan.common.models.training import training_loss


def _batch(name: str, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    spec = get_model_spec(name)
    shape = (rows, 1, *((spec.depth,) if spec.depth else ()), spec.input_size, spec.input_size)
    generator = torch.Generator().manual_seed(rows)
    images = torch.rand(shape, generator=generator)
    if spec.task == "segmentation":
        return images, (torch.rand(shape, generator=generator) > 0.9).float()
    return images, (torch.rand(rows, generator=generator) > 0.5).float()


def _opacus_step(model: nn.Module, images, labels, loss, *, clip: float, views: int = 1):
    """Opacus' reference: hooks, the views averaged, clip and sum, then noise from seed 7."""
    from fedscan.common.models.private import average_views

    wrapped = GradSampleModule(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss(wrapped(images), labels).backward()
    average_views(wrapped, views)
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=0.5,
        max_grad_norm=clip,
        expected_batch_size=4,
        generator=torch.Generator().manual_seed(7),
    )
    optimizer.pre_step()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _fused_step(
    model: nn.Module, images, labels, loss, *, clip: float, views: int = 1, padded: bool = False
):
    optimizer = FusedDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=0.5,
        max_grad_norm=clip,
        expected_batch_size=4,
        generator=torch.Generator().manual_seed(7),
    )
    with PerSampleClipper(model, max_grad_norm=clip, views=views) as clipper:
        forward = partial(padded_forward, clipper, views, 4) if padded else model.__class__.__call__
        loss(forward(model, images), labels).backward()
        clipper.clip()
        optimizer.pre_step()  # attached, as in training: no parameter requires a gradient
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _assert_same(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> None:
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference, strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-6), (mine - theirs).abs().max()


# small-cnn: Conv2d, GroupNorm, Linear; unet: strided and transposed Conv2d, InstanceNorm2d;
# cnn3d: Conv3d. Clip 0.05 clips every sample, 1e3 none: both branches of the factor.
@pytest.mark.parametrize("clip", [0.05, 1e3])
@pytest.mark.parametrize("name", ["small-cnn", "unet", "cnn3d"])
def test_the_fused_noised_gradient_equals_opacus_hooks(name: str, clip: float) -> None:
    # Setup: one model, copied; the same batch, loss and noise seed for both paths
    model = build_model(name, seed=0)
    reference = copy.deepcopy(model)
    images, labels = _batch(name, 4)
    loss = training_loss(get_model_spec(name).loss)
    # Execute
    ours = _fused_step(model, images, labels, loss, clip=clip)
    theirs = _opacus_step(reference, images, labels, loss, clip=clip)
    # Assert: the same noised, scaled gradient; the model is a plain module again
    _assert_same(ours, theirs)
    assert all(p.requires_grad for p in model.parameters())
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_views_are_averaged_per_image_before_clipping_as_on_opacus() -> None:
    model = build_model("small-cnn", seed=0)
    reference = copy.deepcopy(model)
    images, labels = _batch("small-cnn", 6)  # 3 images × 2 views
    loss = training_loss("bce")
    ours = _fused_step(model, images, labels, loss, clip=0.05, views=2)
    _assert_same(ours, _opacus_step(reference, images, labels, loss, clip=0.05, views=2))


# 5 samples pad to 8 (3 zero samples), 3 of 2 views to 4 (2 zero rows); small-cnn: GroupNorm and
# Linear; unet: its deepest layers take the ghost-norm path. Clip 1e3 clips nothing, so a wrong
# row count would scale the sum; 0.05 clips every sample.
@pytest.mark.parametrize("clip", [0.05, 1e3])
@pytest.mark.parametrize(
    ("name", "rows", "views"), [("small-cnn", 5, 1), ("small-cnn", 6, 2), ("unet", 5, 1)]
)
def test_a_padded_batch_gives_the_unpadded_clipped_gradient(
    name: str, rows: int, views: int, clip: float
) -> None:
    # Setup
    model = build_model(name, seed=0)
    reference = copy.deepcopy(model)
    images, labels = _batch(name, rows)
    loss = training_loss(get_model_spec(name).loss)
    # Execute
    ours = _fused_step(model, images, labels, loss, clip=clip, views=views, padded=True)
    theirs = _fused_step(reference, images, labels, loss, clip=clip, views=views)
    # Assert: the padding moved nothing (same noise seed on both)
    _assert_same(ours, theirs)


def test_a_layer_used_twice_sums_its_per_sample_gradients() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    reference = copy.deepcopy(model)
    images, labels = torch.randn(5, 3), torch.randn(5, 3)
    loss = nn.MSELoss()
    ours = _fused_step(model, images, labels, loss, clip=0.1)
    _assert_same(ours, _opacus_step(reference, images, labels, loss, clip=0.1))


def test_an_empty_batch_steps_on_noise_alone() -> None:
    model = build_model("small-cnn", seed=0)
    with PerSampleClipper(model, max_grad_norm=1.0) as clipper:
        clipper.empty()
        assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_a_layer_without_a_rule_is_named_and_refused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.PReLU(), nn.Flatten(), nn.LazyLinear(1))
    assert "PReLU" in supports(model)
    assert "padding" in supports(nn.Conv2d(1, 2, 3, padding="same"))
    assert "StandardizedConv2d" in supports(build_model("small-cnn-ws", seed=0))


def test_every_model_registered_as_fused_has_a_rule_for_each_trainable_layer() -> None:
    fused = [name for name, spec in MODELS.items() if spec.grad_sample_mode == FUSED]
    assert "small-cnn" in fused
    for name in fused:
        assert supports(build_model(name, seed=0)) == "", name


def test_no_rule_calls_autograd() -> None:
    # The invariant of persample.rules: per-sample gradients come from (input, output gradient).
    for module in (persample.rules, persample.conv):
        source = inspect.getsource(module)
        assert "torch.autograd" not in source and ".backward(" not in source


def test_a_frozen_parameter_gets_no_gradient_and_stays_frozen() -> None:
    model = build_model("small-cnn", seed=0)
    reference = copy.deepcopy(model)
    for frozen in (model, reference):
        frozen.head.weight.requires_grad_(False)
    images, labels = _batch("small-cnn", 4)
    loss = training_loss("bce")
    ours = _fused_step(model, images, labels, loss, clip=0.05)
    theirs = _opacus_step(reference, images, labels, loss, clip=0.05)
    assert model.head.weight.grad is None and not model.head.weight.requires_grad
    _assert_same(ours, theirs)


@pytest.mark.parametrize("scale", [1.7, 1e-4])  # x̂ read off the output; recomputed from the input
def test_a_normalisation_scale_read_off_the_output_or_recomputed_gives_opacus_gradient(
    scale: float,
) -> None:
    model = build_model("small-cnn", seed=0)
    with torch.no_grad():
        model.features[1].weight.fill_(scale)
        model.features[1].bias.fill_(0.3)
    reference = copy.deepcopy(model)
    images, labels = _batch("small-cnn", 4)
    loss = training_loss("bce")
    ours = _fused_step(model, images, labels, loss, clip=1e3)
    _assert_same(ours, _opacus_step(reference, images, labels, loss, clip=1e3))


def _ghost_model() -> nn.Module:
    """Few positions, many channels: both convolutions take the ghost-norm path; the transposed
    one (stride 2) and a plain one used twice."""
    shared = nn.Conv2d(32, 32, 3, padding=1)
    return nn.Sequential(
        nn.ConvTranspose2d(16, 32, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(),
        shared,
        nn.Tanh(),
        shared,
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 1),
        nn.Flatten(0),
    )


@pytest.mark.parametrize("views", [1, 2])
def test_ghost_norm_layers_give_opacus_gradient_with_views_and_a_layer_used_twice(
    views: int,
) -> None:
    from fedscan.common.models.persample import ghost

    model = _ghost_model()
    images = torch.randn(4, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    assert ghost.cheaper(model[0], images, torch.zeros(4, 32, 8, 8))
    reference = copy.deepcopy(model)
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss = training_loss("bce")
    ours = _fused_step(model, images, labels, loss, clip=0.05, views=views)
    _assert_same(ours, _opacus_step(reference, images, labels, loss, clip=0.05, views=views))


_CONV_CASES = [
    nn.Conv2d(3, 4, 3, padding=1),
    nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    nn.Conv2d(2, 5, 1, stride=2),
    nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
    nn.ConvTranspose2d(4, 3, 2, stride=2),
]


@pytest.mark.parametrize("layer", _CONV_CASES, ids=repr)
def test_every_convolution_method_gives_each_samples_autograd_gradient(layer: nn.Module) -> None:
    # Setup: a batch of 3 and each sample's own weight gradient from autograd, one at a time
    from fedscan.common.models.persample import conv, ghost

    torch.manual_seed(0)
    a = torch.randn(3, layer.in_channels, 9, 8)
    g = torch.randn_like(layer(a))
    expected = []
    for sample in range(3):
        layer.zero_grad()
        (layer(a[sample : sample + 1]) * g[sample : sample + 1]).sum().backward()
        expected.append(layer.weight.grad.clone())
    # Execute: the patches, both instantiating methods and the ghost factors
    deferred = ghost.deferred(layer, a, g)
    source = g if layer.transposed else a
    # Assert: the strided patches are unfold's; every method gives the per-sample gradients
    unfolded = nn.functional.unfold(
        source, layer.kernel_size, layer.dilation, layer.padding, layer.stride
    )
    assert torch.equal(ghost.patches_of(source, layer), unfolded)
    for per_sample in (
        conv.grouped(layer, a, g),
        conv.unfolded(layer, a, g),
        deferred.instantiate(),
    ):
        assert torch.allclose(per_sample, torch.stack(expected), rtol=1e-4, atol=1e-5)
    norms = torch.stack(expected).flatten(1).norm(dim=1).square()
    assert torch.allclose(deferred.squared_norms(), norms, rtol=1e-4)


def test_the_tuner_times_only_the_methods_that_can_win_there() -> None:
    # Setup: layers at the U-Net's geometries, a deep one as large as ResNet's, and a volume's
    from fedscan.common.models.persample import conv

    def candidates(layer: nn.Module, batch: int, side: int) -> list[str]:
        a = torch.zeros(batch, layer.in_channels, *([side] * (layer.weight.dim() - 2)))
        g = torch.zeros_like(layer(a))
        return [method.__name__ for method in conv._candidates(layer, a, g)]

    # Execute / Assert: few positions and many channels: ghost norms against unfolding
    assert candidates(nn.Conv2d(64, 128, 3, padding=1), 64, 8) == ["deferred", "unfolded"]
    # … unless the batch's gradients would be too large to form: ghost norms alone
    assert candidates(nn.Conv2d(512, 512, 3, padding=1), 64, 4) == ["deferred"]
    # large images: grouped, with unfolding only while a sample's patches are small
    assert candidates(nn.Conv2d(1, 16, 3, stride=2, padding=1), 64, 64) == ["grouped", "unfolded"]
    assert candidates(nn.Conv2d(16, 16, 3, padding=1), 64, 32) == ["grouped"]
    assert candidates(nn.Conv3d(1, 8, 3, padding=1), 4, 8) == ["grouped"]
