"""DP-SGD step time ÷ plain SGD step time, per model and per Opacus per-sample-gradient mode.

One process, same machine, same batch (Poisson-free: a fixed batch of ``--batch`` random images at
the model's input size, binary labels), the model's own training loss. Each cell is the median over
``--steps`` timed steps after ``--warmup`` untimed ones. Modes: ``hooks`` (Opacus default),
``functorch``, ``ew`` (expanded weights) and ``ghost`` (ghost clipping: no per-sample gradients are
stored, a second backward pass instead), and fedscan's own ``fused`` (per-sample gradients from the
layers' inputs and output gradients in the one backward pass, no autograd weight gradients;
:mod:`fedscan.common.models.persample`). A mode a model cannot run is shown as "—" with the reason.

    python bench/dp_step.py [--models small-cnn,hog-svm] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from fedscan.common.models.networks import build_model
from fedscan.common.models.registry import MODELS, get_model_spec
from fedscan.common.models.training import training_loss

MODES = ("hooks", "functorch", "ew", "ghost", "fused")
StepFn = Callable[[], None]


def _timed(step: StepFn, *, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _plain(
    model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor, labels: torch.Tensor
) -> StepFn:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step


def _fused(
    model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor, labels: torch.Tensor
) -> StepFn:
    from opacus.optimizers import DPOptimizerFastGradientClipping

    from fedscan.common.models.persample import PerSampleClipper

    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=len(images),
    )
    clipper = PerSampleClipper(model, max_grad_norm=1.0).__enter__()  # held for the bench's life

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        clipper.clip()
        optimizer.step()

    return step


def _private(
    model: torch.nn.Module, loss_fn: Callable, images: torch.Tensor, labels: torch.Tensor, mode: str
) -> StepFn:
    from opacus import PrivacyEngine

    if mode == "fused":
        return _fused(model, loss_fn, images, labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=len(images)
    )
    engine = PrivacyEngine(accountant="prv")
    made = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=mode,
        **({"criterion": _Criterion(loss_fn)} if mode == "ghost" else {}),
    )
    private, optimizer = made[0], made[1]
    criterion = made[2] if mode == "ghost" else loss_fn

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(private(images), labels).backward()
        optimizer.step()

    return step


class _Criterion(torch.nn.Module):
    """Ghost clipping wraps a loss module and asks it for per-sample losses
    (``reduction='none'``)."""

    def __init__(self, loss_fn: Callable) -> None:
        super().__init__()
        self.loss_fn, self.reduction = loss_fn, "mean"

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return torch.stack(
                [
                    self.loss_fn(o.unsqueeze(0), y.unsqueeze(0))
                    for o, y in zip(outputs, labels, strict=True)
                ]
            )
        return self.loss_fn(outputs, labels)


def measure_model(
    name: str, *, batch: int, warmup: int, steps: int
) -> tuple[float, dict[str, str]]:
    """(plain ms per step, mode → "ratio×" or "— (reason)")."""
    spec = get_model_spec(name)
    depth = (spec.depth,) if spec.depth else ()  # a 3-D model's volumes
    images = torch.rand(batch, 1, *depth, spec.input_size, spec.input_size)
    labels = (  # a segmentation model's target is a mask of the image's shape
        (torch.rand(images.shape) > 0.9).float()
        if spec.task == "segmentation"
        else (torch.rand(batch) > 0.5).float()
    )
    loss_fn = training_loss(spec.loss)
    plain = _timed(
        _plain(build_model(name, seed=0), loss_fn, images, labels), warmup=warmup, steps=steps
    )
    cells = {}
    for mode in MODES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step = _private(build_model(name, seed=0), loss_fn, images, labels, mode)
                cells[mode] = f"{_timed(step, warmup=warmup, steps=steps) / plain:.2f}×"
        except Exception as error:  # a mode this model cannot run is a table cell, not a crash
            cells[mode] = f"— ({type(error).__name__})"
    return plain * 1000, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"\nDP-SGD step ÷ plain step; batch {args.batch}, {args.threads} threads, torch "
        f"{torch.__version__}, "
        f"median of {args.steps} steps\n"
    )
    print("| model | plain ms/step | " + " | ".join(MODES) + " |")
    print("|---|---|" + "---|" * len(MODES))
    for name in args.models.split(","):
        plain_ms, cells = measure_model(
            name, batch=args.batch, warmup=args.warmup, steps=args.steps
        )
        print(
            f"| {name} | {plain_ms:.1f} | " + " | ".join(cells[mode] for mode in MODES) + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
