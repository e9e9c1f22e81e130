"""Volumes at archive scale: series assembly speed, each 3-D model's DP step, a site's DP round.

1. Assembly — three synthetic CT sites of ``--volumes`` series each (one per layout: single-frame
   head-first, shuffled names in reversed order, enhanced multi-frame): series per second cold
   (no cache), cold while filling the cache, and warm (every series from the cache).
2. DP step — each 3-D model at its default input (1 × 32 × 64 × 64 voxels) and batch (16): the
   median step time with Opacus DP-SGD (σ = 1, clip 1) against the plain SGD step, and the peak
   RSS of a process that only does that.
3. Round — what one site does in a DP training round: load its ``--volumes`` series (warm cache),
   then ``local-epochs`` (3) of DP-SGD at the model's defaults; wall time and peak RSS of the site
   process (decode workers are separate processes and sleep on a warm cache).

Each measurement runs in its own process, so each peak RSS is its own.

    python bench/volumes.py [--volumes 100] [--threads 2] [--round-models cnn3d,unet3d]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("cnn3d", "densenet3d", "unet3d")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", *args, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ingest(site: str, cache: str) -> dict:
    from fedscan.common.ingest.labels import LabelSpec
    from fedscan.common.ingest.series.assemble import VolumeSettings, ingest_volumes
    from fedscan.common.ingest.series.resample import VolumeInput

    started = time.perf_counter()
    samples, report = ingest_volumes(
        Path(site), LabelSpec(), VolumeSettings(VolumeInput(32, 64, 5.0), cache_dir=cache)
    )
    elapsed = time.perf_counter() - started
    summary = report.summary()
    return {
        "seconds": elapsed,
        "series": summary["series"],
        "accepted": summary["accepted"],
        "files": summary["files"],
        "slices": summary["slices_per_series"].get("median", 0),
        "rss_mb": _rss_mb(),
        "samples": len(samples.labels),
    }


def _step(name: str, mode: str) -> dict:
    import torch

    from fedscan.common.models.networks import build_model
    from fedscan.common.models.registry import get_model_spec
    from fedscan.common.models.training import training_loss

    spec = get_model_spec(name)
    batch = spec.batch_size
    images = torch.rand(batch, 1, spec.depth, spec.input_size, spec.input_size)
    segmentation = spec.task == "segmentation"
    targets = (images > 0.97).float() if segmentation else torch.randint(0, 2, (batch,)).float()
    model = build_model(name, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = training_loss(spec.loss)
    stage = None
    if mode == "dp":
        from contextlib import ExitStack

        from fedscan.common.models.private import made_private
        from fedscan.common.models.training import DpStep

        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, targets), batch_size=batch
        )
        private = ExitStack().enter_context(  # held for the bench process's life
            made_private(
                model,
                optimizer,
                loader,
                dp=DpStep(noise_multiplier=1.0, clip_norm=1.0),
                mode=spec.grad_sample_mode,
                views=1,
                device=torch.device("cpu"),
            )
        )
        model, optimizer, stage = private.model, private.optimizer, private.stage
    times = []
    for index in range(7):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss(model(images), targets).backward()
        if stage is not None:
            stage.after_backward()
        optimizer.step()
        if index >= 2:  # two warm-up steps
            times.append(time.perf_counter() - started)
    return {"step_s": statistics.median(times), "rss_mb": _rss_mb(), "batch": batch}


def _round(name: str, site: str, cache: str) -> dict:
    import torch

    from fedscan.common.config import RunConfig
    from fedscan.common.data.site import load_volume_site
    from fedscan.common.data.sources import volume_input
    from fedscan.common.ingest.series.assemble import VolumeSettings
    from fedscan.common.models.networks import build_model
    from fedscan.common.models.registry import get_model_spec
    from fedscan.common.models.training import DpStep, train_local
    from fedscan.common.tasks import LabelScheme

    spec = get_model_spec(name)
    task = spec.task
    train = RunConfig.from_options(model=name, task=task).train
    started = time.perf_counter()
    target = volume_input(spec)
    assert target is not None
    data = load_volume_site(
        Path(site),
        VolumeSettings(target, cache_dir=cache),
        val_fraction=0.0,
        masks=task == "segmentation",
        scheme=LabelScheme(task),
    )
    loaded = time.perf_counter() - started
    model = build_model(name, seed=0)
    outcome = train_local(model, data.train, train, dp=DpStep(1.0, 1.0), device=torch.device("cpu"))
    return {
        "volumes": len(data.train),
        "load_s": loaded,
        "train_s": time.perf_counter() - started - loaded,
        "steps": outcome.steps,
        "batch": train.batch_size,
        "epochs": train.local_epochs,
        "rss_mb": _rss_mb(),
    }


def child_main(argv: list[str]) -> None:
    import torch

    threads = int(argv[argv.index("--threads") + 1])
    torch.set_num_threads(threads)
    kind, *rest = argv[: argv.index("--threads")]
    result = {"ingest": _ingest, "step": _step, "round": _round}[kind](*rest)
    print(json.dumps(result))


def _assembly_table(root: Path, volumes: int, threads: int) -> list[str]:
    from fedscan.common.data.synth_ct import CT_PROFILES, CTConfig, generate_ct_site

    lines = [
        "| site layout | series (accepted) | files | slices | cold s | cold series/s | "
        "cold + cache s | warm s | warm series/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, profile in enumerate(CT_PROFILES):
        site = root / f"site-{index}"
        generate_ct_site(site, index, CTConfig(volumes_per_site=volumes))
        cold = _child(["ingest", str(site), ""], threads)
        filling = _child(["ingest", str(site), str(root / "cache")], threads)
        warm = _child(["ingest", str(site), str(root / "cache")], threads)
        lines.append(
            f"| {profile.layout} | {cold['series']} ({cold['accepted']}) | {cold['files']} | "
            f"{cold['slices']} | {cold['seconds']:.1f} | {cold['series'] / cold['seconds']:.1f} | "
            f"{filling['seconds']:.1f} | {warm['seconds']:.2f} | "
            f"{warm['series'] / warm['seconds']:.0f} | {max(cold['rss_mb'], warm['rss_mb']):.0f} |"
        )
    return lines


def _step_table(threads: int) -> list[str]:
    lines = [
        "| model | batch | plain step s | DP step s | DP ÷ plain | plain RSS MB | DP RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        plain, private = (
            _child(["step", name, "plain"], threads),
            _child(["step", name, "dp"], threads),
        )
        lines.append(
            f"| {name} | {plain['batch']} | {plain['step_s']:.3f} | {private['step_s']:.3f} | "
            f"{private['step_s'] / plain['step_s']:.2f}× | {plain['rss_mb']:.0f} | "
            f"{private['rss_mb']:.0f} |"
        )
    return lines


def _round_table(root: Path, models: list[str], threads: int) -> list[str]:
    lines = [
        "| model | volumes | batch × epochs | DP steps | load s (warm) | DP training s | "
        "round s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in models:
        done = _child(["round", name, str(root / "site-0"), str(root / "cache")], threads)
        lines.append(
            f"| {name} | {done['volumes']} | {done['batch']} × {done['epochs']} | {done['steps']} "
            f"| {done['load_s']:.1f} | {done['train_s']:.1f} | "
            f"{done['load_s'] + done['train_s']:.1f} | {done['rss_mb']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--round-models", default="cnn3d,unet3d")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-volumes-") as tmp:
        root = Path(tmp)
        print(f"## Series assembly ({args.volumes} series per site, {args.threads} threads)\n")
        print("\n".join(_assembly_table(root, args.volumes, args.threads)))
        print("\n## DP step at the default input (1 × 32 × 64 × 64, σ 1, clip 1)\n")
        print("\n".join(_step_table(args.threads)))
        print(f"\n## A site's DP training round ({args.volumes} volumes of site 0)\n")
        print("\n".join(_round_table(root, args.round_models.split(","), args.threads)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
