"""``fedscan``: console entry point (typer + rich).

Every failure the user can fix is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from fedscan import __version__
from fedscan.cli.certs import certs_app
from fedscan.cli.deploy_commands import client_app, logs_command, run_command, server_app, status_command
from fedscan.cli.console import EXIT_FAILED, EXIT_USAGE, console, err_console, fail
from fedscan.common import defaults
from fedscan.common.errors import FedscanError
from fedscan.common.jsonsafe import json_safe

app = typer.Typer(name="fedscan", help="Federated, differentially private medical-imaging training.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(certs_app, name="certs")
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")
app.command("run")(run_command)
app.command("status")(status_command)
app.command("logs")(logs_command)


def _version(value: bool) -> None:
    if value:
        console.print(f"fedscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the fedscan version and exit.")] = False,
         log_level: Annotated[str, typer.Option(help="Log level of fedscan's own messages.")] = "WARNING"
         ) -> None:
    """Federated, differentially private medical-imaging training."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")


@app.command()
def synth(out: Annotated[Path, typer.Option(help="Folder to write site-0 ... site-{N-1} into.")],
          sites: Annotated[int, typer.Option(help="Number of synthetic hospitals.")] = defaults.SITES,
          seed: Annotated[int, typer.Option(help="Seed; the same seed writes identical files.")] = 0,
          images_per_site: Annotated[int, typer.Option(help="DICOM images per site.")] = defaults.IMAGES_PER_SITE) -> None:
    """Write synthetic hospitals: DICOM chest-radiograph phantoms and a labels.csv per site."""
    from fedscan.common.synth import SynthConfig, generate_sites

    try:
        site_dirs = generate_sites(out, SynthConfig(sites, images_per_site, seed))
    except (FedscanError, OSError) as exc:
        raise fail(str(exc)) from None
    for site_dir in site_dirs:
        console.print(f"wrote {site_dir}", highlight=False)


@app.command()
def simulate(
    sites: Annotated[int | None, typer.Option(help=f"Number of simulated hospitals, ≥ 2 (default {defaults.SITES}; "
                                                   "with dicom:DIR,DIR… the folders listed).", show_default=False)] = None,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = defaults.ROUNDS,
    data: Annotated[str, typer.Option(help="synthetic | npz:PATH | dicom:DIR_A,DIR_B,... (site folders, each with "
                                           "labels.csv) | dicom:DIR (a folder of site folders).")] = "synthetic",
    partition: Annotated[str, typer.Option(help="How npz data is split: iid | dirichlet:ALPHA.")] = "iid",
    task: Annotated[str, typer.Option(help="classification | segmentation (a mask per image; U-Net, Dice).")
                     ] = "classification",
    model: Annotated[str | None, typer.Option(help="small-cnn | densenet121 | resnet18 | hog-svm | hog-logreg | lbp-svm "
                                                   "| lbp-logreg (classical: features → linear model) | unet "
                                                   "(segmentation). Default: small-cnn, or unet for segmentation.",
                                              show_default=False)] = None,
    classical: Annotated[str, typer.Option(help="Classical models' settings, e.g. median=3,equalize=clahe,roi=otsu,"
                                                "hog-cell=8,lbp-grid=4 (see README).")] = "",
    epsilon: Annotated[float, typer.Option(help="Privacy budget ε for the whole run, per site.")] = defaults.EPSILON,
    delta: Annotated[float, typer.Option(help="Privacy δ; must be below 1/(samples at a site).")] = defaults.DELTA,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Train WITHOUT differential privacy (benchmarks only).")] = False,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round at each site.")] = defaults.LOCAL_EPOCHS,
    learning_rate: Annotated[float | None, typer.Option(help=f"Local SGD learning rate (default {defaults.LEARNING_RATE}"
                                                             f", {defaults.SEGMENTATION['learning-rate']} for "
                                                             "segmentation).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Expected batch size (Poisson sampling rate = batch/n).")] = defaults.BATCH_SIZE,
    strategy: Annotated[str, typer.Option(help="fedavg | fedprox | fedadam | median | trimmed-mean | krum.")] = defaults.STRATEGY,
    central_noise: Annotated[float, typer.Option(help="Central (site-level) DP on the aggregate: noise "
                                                      "multiplier σ; 0 = off (FedAvg only).")] = 0.0,
    central_clip: Annotated[float, typer.Option(help="Central DP: L2 bound on one site's update.")] = 1.0,
    images_per_site: Annotated[int, typer.Option(help="Images per synthetic site.")] = defaults.IMAGES_PER_SITE,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for data, partition and model initialisation.")] = 0,
    out: Annotated[Path, typer.Option(help="Where run directories are written.")] = Path("runs"),
    cache_dir: Annotated[str, typer.Option(help="Decode-once cache (default: $FEDSCAN_CACHE_DIR or ~/.cache/fedscan).")] = "",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode images every time; use no cache.")] = False,
    cross_site: Annotated[bool | None, typer.Option("--cross-site/--no-cross-site", help="After the last round, "
                                                    "fine-tune at each site (DP, one more release) and evaluate every "
                                                    "model at every site (default: on for classification).",
                                                    show_default=False)] = None,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard event files (RUN_DIR/tensorboard).")] = False,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's own logs.")] = False,
    resume: Annotated[str, typer.Option(help="Continue this run id (in --out) from its last checkpoint, "
                                             "with its own settings; other options are ignored.")] = "",
) -> None:
    """Run a whole DP federation on this machine (default: 3 synthetic DICOM hospitals)."""
    from fedscan.common.cache import default_cache_dir
    from fedscan.cli.simulate import DataChoice, count_sites, resume_simulation, run_simulation
    from fedscan.common.config import RunConfig
    from fedscan.common.privacy import PrivacyConfig
    from fedscan.common.training import TrainSettings

    try:
        if resume:
            summary = resume_simulation(out, resume, console=console, verbose=verbose,
                                        cache_dir="" if no_cache else (cache_dir or default_cache_dir()))
            _print_summary(summary)
            return
        choice = DataChoice.parse(data)
        sites = count_sites(choice, sites)
        if sites < 2:
            raise FedscanError("--sites must be at least 2: a federation needs two hospitals.")
        preset = {"model": defaults.MODEL, "learning-rate": defaults.LEARNING_RATE, "cross-site": True,
                  **defaults.task_defaults(task)}
        config = RunConfig(
            rounds=rounds, min_sites=sites, strategy=strategy, seed=seed,
            central_noise_multiplier=central_noise, central_clip_norm=central_clip,
            cross_site=preset["cross-site"] if cross_site is None else cross_site, tensorboard=tensorboard,
            train=TrainSettings(model=model or preset["model"], task=task, seed=seed, classical=classical,
                                learning_rate=preset["learning-rate"] if learning_rate is None else learning_rate,
                                local_epochs=local_epochs, batch_size=batch_size),
            privacy=PrivacyConfig(epsilon=epsilon, delta=delta, enabled=not no_dp))
        if no_dp:
            err_console.print("[bold yellow]WARNING: differential privacy is OFF (--no-dp); "
                              "updates can leak patient data. Never use this with real data.[/]")
        summary = run_simulation(config, choice, sites=sites, partition=partition,
                                 images_per_site=images_per_site, device=device, out=out,
                                 console=console, verbose=verbose,
                                 cache_dir="" if no_cache else (cache_dir or default_cache_dir()))
    except FedscanError as exc:
        raise fail(str(exc), EXIT_FAILED if exc.code == "run-failed" else EXIT_USAGE) from None
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from fedscan.cli.display import print_summary

    print_summary(console, summary)


data_app = typer.Typer(help="Inspect a site's data folder.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    folder: Annotated[Path, typer.Argument(help="The site's data folder (any depth; DICOM, PNG, JPEG).")],
    labels: Annotated[str, typer.Option(help="Labels CSV (default: labels.csv in the folder).")] = "",
    key: Annotated[str, typer.Option(help="What the CSV key matches: path | SOPInstanceUID | "
                                          "StudyInstanceUID | AccessionNumber | PatientID.")] = "path",
    key_column: Annotated[str, typer.Option(help="CSV column holding the key (default: file / the attribute).")] = "",
    label_column: Annotated[str, typer.Option(help="CSV column holding the 0/1 label.")] = "label",
    patient_column: Annotated[str, typer.Option(help="CSV column grouping images by patient (default: PatientID).")] = "",
    task: Annotated[str, typer.Option(help="classification | segmentation (also check every image's mask).")
                    ] = "classification",
    mask_column: Annotated[str, typer.Option(help="CSV column naming each image's mask file (segmentation).")] = "mask",
    frames: Annotated[str, typer.Option(help="Multi-frame policy: middle | all.")] = "middle",
    model: Annotated[str, typer.Option(help="Model whose input size the cache entries are built for.")] = defaults.MODEL,
    cache_dir: Annotated[str, typer.Option(help="Decode-once cache (default: $FEDSCAN_CACHE_DIR or ~/.cache/fedscan).")] = "",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode everything; read and write no cache.")] = False,
    workers: Annotated[int, typer.Option(help="Decoder processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Per-file decode time limit, seconds.")] = 60.0,
    report: Annotated[Path | None, typer.Option(help="Write the per-file JSON report here (local: holds paths).")] = None,
) -> None:
    """Check a site folder: every file accepted or rejected with a reason, and what was found."""
    from fedscan.cli.data import build_settings, check_site, print_report
    from fedscan.common.cache import default_cache_dir
    from fedscan.common.labels import LabelSpec
    from fedscan.common.models import get_model_spec

    try:
        if task not in ("classification", "segmentation"):
            raise FedscanError(f"Unknown --task {task!r}; use classification or segmentation.")
        spec = LabelSpec(csv=labels, key=key, key_column=key_column, label_column=label_column,
                         patient_column=patient_column, mask_column=mask_column)
        settings = build_settings(size=get_model_spec(model).input_size, frames=frames,
                                  cache_dir="" if no_cache else (cache_dir or default_cache_dir()),
                                  workers=workers, timeout_s=timeout)
        _, found = check_site(folder, spec, settings, masks=task == "segmentation")
    except FedscanError as exc:
        raise fail(str(exc)) from None
    print_report(console, found)
    if report is not None:
        report.write_text(found.to_json(), encoding="utf-8")
        console.print(f"Per-file report (local only, holds paths): {report}", highlight=False)
    if found.accepted == 0:
        reasons = found.rejected_by_reason() or "the folder holds no files"
        raise fail(f"No usable image in {folder}: 0 of {len(found.records)} files accepted ({reasons}).",
                   EXIT_FAILED)


privacy_app = typer.Typer(help="The site's privacy ledger.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("report")
def privacy_report(
    config: Annotated[Path, typer.Option(help="The site's site.toml.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """ε spent per run and over the site's lifetime (PRV, RDP beside it), from the site's ledger."""
    from fedscan.cli.privacy import print_privacy_report
    from fedscan.cli.privacy import privacy_report as build_report
    from fedscan.common.site_config import load_site_config

    try:
        report = build_report(load_site_config(config))
    except FedscanError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print_privacy_report(console, report)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run-id>).")],
           tensorboard: Annotated[bool, typer.Option(help="Also rebuild RUN_DIR/tensorboard event files.")] = False,
           ) -> None:
    """(Re)build report.html and model_card.md of a run from its run directory."""
    from fedscan.server.report import build_report, rebuild_events

    try:
        written = [*build_report(run_dir), *([rebuild_events(run_dir)] if tensorboard else [])]
    except FedscanError as exc:
        raise fail(str(exc)) from None
    console.print("\n".join(f"wrote {path}" for path in written), highlight=False)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="final.pt (with final.json beside it).")],
    data: Annotated[str, typer.Option(help="npz:PATH or dicom:DIR (one site folder).")],
    split: Annotated[str, typer.Option(help="npz split: train | val | test.")] = "val",
    labels: Annotated[str, typer.Option(help="Labels CSV for dicom:DIR (default: labels.csv in it).")] = "",
    key: Annotated[str, typer.Option(help="What the CSV key matches (see `data check --help`).")] = "path",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    plots: Annotated[Path | None, typer.Option(help="Write roc.png and reliability.png into this folder.")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Write one CSV row per image (key, label, score; for "
                                                          "segmentation its pixels and Dice); local only: keys are "
                                                          "file paths.")] = None,
) -> None:
    """Evaluate a checkpoint on local data and print metrics as JSON (Dice and IoU for segmentation)."""
    from fedscan.common.cache import default_cache_dir
    from fedscan.cli.evaluate import evaluate_checkpoint
    from fedscan.common.labels import LabelSpec

    try:
        result = evaluate_checkpoint(checkpoint, data, split=split, device=device,
                                     labels=LabelSpec(csv=labels, key=key), cache_dir=default_cache_dir(),
                                     plots=plots, predictions=predictions)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    print(json.dumps(json_safe(result), indent=2))


def run() -> None:
    """Console-script entry point."""
    app(prog_name="fedscan")


if __name__ == "__main__":
    run()
