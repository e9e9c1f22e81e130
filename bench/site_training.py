"""A site's local training on each device it has (CPU, and CUDA when present), with DP-SGD and
without it on the same data: time and quality.

One synthetic hospital (the demo's first site, ``--images`` images) is ingested with its finding
masks; each model trains on it with DP-SGD (noise multiplier ``--noise``, clip 1, Poisson batches of
``--batch``) for ``--epochs`` local epochs through
:func:`fedscan.common.models.training.train_local`, the code a site runs, then is scored on the
site's validation split: AUC for small-cnn, Dice for the U-Net. Each with augmentation on and
off, which shows what the data path costs; on is batched on the training device (the default) or
per image in the CPU loader (MONAI, ``--augment-on loader``),
and each with plain SGD and DP-SGD on two per-sample gradient paths (the same loader and batches;
plain SGD shuffles instead of Poisson sampling): Opacus' ``hooks`` and fedscan's ``fused``
(:mod:`fedscan.common.models.persample`). Their ratios to plain SGD are what DP costs a hospital
per round. One markdown table and the ratios; rows for CUDA appear only where a GPU is visible.
Each round trains in a fork of this process, as a site's warm executor answers each message;
``--in-process`` trains them all in this one (its DP rounds reuse every batch size's convolution
set-up from earlier rounds, which flatters them).

    python bench/site_training.py [--epochs 10] [--models small-cnn,unet] [--repeats 3]
        [--threads 16] [--augment-on loader,device] [--in-process]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fedscan.common.data.imageset import SiteData
from fedscan.common.data.site import load_site
from fedscan.common.data.synth import SynthConfig, generate_site
from fedscan.common.defaults import AUGMENT_DEVICE, AUGMENT_PLACES
from fedscan.common.metrics.classification import evaluate_model
from fedscan.common.metrics.segmentation import evaluate_segmentation
from fedscan.common.models import registry
from fedscan.common.models.networks import build_model
from fedscan.common.models.private import FUSED
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.training import DpStep, train_local
from fedscan.common.training_settings import TrainSettings

PLAIN = "plain"
OFF = "off"
ARMS = (PLAIN, "hooks", FUSED)  # plain SGD, then DP-SGD on each per-sample gradient path


@contextmanager
def _grad_sample_mode(model: str, arm: str) -> Iterator[None]:
    """The model's registry entry on ``arm``'s path for one row (the bench compares paths)."""
    spec = registry.MODELS[model]
    if arm != PLAIN:
        registry.MODELS[model] = replace(spec, grad_sample_mode=arm)
    try:
        yield
    finally:
        registry.MODELS[model] = spec


def _places(option: str) -> list[str]:
    """The augmentation places to time, as ``--augment-on`` lists them."""
    places = [place.strip() for place in option.split(",")]
    if any(place not in AUGMENT_PLACES for place in places):
        raise SystemExit(f"--augment-on takes {', '.join(AUGMENT_PLACES)}, not {option}")
    return list(dict.fromkeys(places))


def _site(folder: Path, images: int) -> SiteData:
    """The synthetic site, generated and ingested (so that later loads are warm)."""
    generate_site(folder, 0, SynthConfig(sites=1, images_per_site=images, seed=0))
    return _load(folder)


def _load(folder: Path) -> SiteData:
    return load_site(folder, size=64, masks=True)


def _trained(
    model: str,
    data: SiteData,
    device: torch.device,
    *,
    epochs: int,
    batch: int,
    noise: float,
    augment: str,
    arm: str,
) -> tuple[str, float]:
    spec = get_model_spec(model)
    settings = TrainSettings(
        model=model,
        task=spec.task,
        local_epochs=epochs,
        batch_size=batch,
        augment=augment != OFF,
        augment_on=AUGMENT_DEVICE if augment == OFF else augment,
        learning_rate=0.1 if spec.task == "segmentation" else 0.05,
    )
    network = build_model(model, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    dp = DpStep(noise, 1.0) if arm != PLAIN else None
    with _grad_sample_mode(model, arm):
        outcome = train_local(network, data.train, settings, dp=dp, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if spec.task == "segmentation":
        metrics, _ = evaluate_segmentation(network, data.val, device=device)
        quality = f"Dice {metrics['dice']:.3f}"
    else:
        quality = f"AUC {evaluate_model(network, data.val, device=device)['auc']:.3f}"
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    return (
        f"| {model} | {name} | {augment} | {arm} | "
        f"{outcome.steps} | {seconds:.1f} | {1000 * seconds / max(outcome.steps, 1):.0f} | "
        f"{outcome.loss:.3f} | {quality} |"
    ), seconds


def _paired(runs: dict[str, list[tuple[float, str]]], arm: str) -> str:
    """``arm``'s time ÷ plain SGD's, per repeat (the two ran back to back, so a machine's drift
    cancels): the median and the range."""
    ratios = sorted(
        mine / plain for (mine, _), (plain, _) in zip(runs[arm], runs[PLAIN], strict=True)
    )
    median = ratios[len(ratios) // 2]
    return (
        f"DP ({arm}) ÷ plain {median:.2f}× (range {ratios[0]:.2f}–{ratios[-1]:.2f}, "
        f"{len(ratios)} pairs)"
    )


def _in_fork(task: Callable[[], Any], threads: int) -> Any:
    """``task()`` in a fork of this process, as a site's warm executor answers each message
    (``client/warm_exec.py``): the imports done, but no convolution set-ups, caches or allocator
    state from earlier rounds. In one process, DP rounds reuse the set-ups of every batch size
    Poisson sampling drew before, which a site's round never does."""
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()

    def run() -> None:
        if threads:
            torch.set_num_threads(threads)
        try:
            results.put((True, task()))
        except BaseException:  # the parent would wait for ever: send the error instead
            results.put((False, traceback.format_exc()))

    child = context.Process(target=run)
    child.start()
    succeeded, result = results.get()
    child.join()
    if not succeeded:
        raise RuntimeError(f"a forked round failed:\n{result}")
    return result


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small-cnn,unet")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the median shown")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument(
        "--augment-on",
        default=AUGMENT_DEVICE,
        help="where augmentation runs, comma-separated: device (batched on the training device, "
        "the default) or loader (per image, MONAI, on the CPU)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train every round in this process, not each in a fork as a site does",
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Imported once here, not inside the first row's timing: Opacus (≈ 1 s) and torch._dynamo,
    # which the first optimizer step imports (≈ 0.9 s; it made small-cnn's first row, DP, 0.1×
    # slower than it is).
    import opacus  # noqa: F401
    import torch._dynamo as _dynamo  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "site"
        if args.in_process:
            data = _site(folder, args.images)
            run = lambda task: task(data)  # noqa: E731
        else:  # the parent runs no PyTorch op and asks no CUDA question: a fork could not use it
            _in_fork(lambda: len(_site(folder, args.images).train), args.threads)
            run = lambda task: _in_fork(lambda: task(_load(folder)), args.threads)  # noqa: E731
        cuda = run(lambda _: torch.cuda.is_available())
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if cuda else [])
        print(run(lambda data: _heading(data, args)))
        ratios = []
        for model in args.models.split(","):
            for device in devices:
                for augment in [*_places(args.augment_on), OFF]:
                    ratios.append(_compared(run, model, device, augment, args))
        print("\nSite-seconds of a round, DP ÷ plain on the same data:\n" + "\n".join(ratios))


def _heading(data: SiteData, args: argparse.Namespace) -> str:
    return (
        f"One synthetic site: {len(data.train)} training, {len(data.val)} validation images; "
        f"DP-SGD σ {args.noise}, clip 1, batch {args.batch}, {args.epochs} local epochs; "
        f"{'all rounds in one process' if args.in_process else 'each round in a fork'}\n\n"
        "| model | device | augmentation | training | steps | train s | ms per step | "
        "train loss | validation |\n|---|---|---|---|---|---|---|---|---|"
    )


def _compared(
    run: Callable[[Callable[[SiteData], Any]], Any],
    model: str,
    device: torch.device,
    augment: str,
    args: argparse.Namespace,
) -> str:
    """Every arm's rounds, alternated (drift hits every arm alike); prints the median rows and
    returns the DP ÷ plain line."""
    runs: dict[str, list[tuple[float, str]]] = {arm: [] for arm in ARMS}
    options = dict(epochs=args.epochs, batch=args.batch, noise=args.noise, augment=augment)
    for _ in range(args.repeats):
        for arm in ARMS:
            row, seconds = run(partial(_trained, model, device=device, arm=arm, **options))
            runs[arm].append((seconds, row))
    median = {arm: sorted(r)[len(r) // 2] for arm, r in runs.items()}
    print(*(median[arm][1] for arm in ARMS), sep="\n", flush=True)
    return f"- {model}, {device.type}, augmentation {augment}: " + ", ".join(
        _paired(runs, arm) for arm in ARMS[1:]
    )


if __name__ == "__main__":
    main()
