"""``fedscan``: console entry point (typer + rich).

Every failure the user can fix is one line on stderr and exit code 2. The commands live with their
readers: :mod:`~fedscan.cli.client_commands`, :mod:`~fedscan.cli.data`, :mod:`~fedscan.cli.privacy`,
:mod:`~fedscan.cli.evaluate` and :mod:`~fedscan.cli.explain` for a hospital,
:mod:`~fedscan.cli.server_commands` for the coordinator operator, :mod:`~fedscan.cli.synth` and
``simulate`` (here) for anyone.
Each imports its work only when it runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from fedscan import __version__
from fedscan.cli.certs import certs_app
from fedscan.cli.client_commands import client_app
from fedscan.cli.console import EXIT_FAILED, EXIT_USAGE, console, err_console, fail
from fedscan.cli.data import data_app
from fedscan.cli.evaluate import evaluate
from fedscan.cli.explain import explain
from fedscan.cli.privacy import privacy_app
from fedscan.cli.run_options import with_run_options
from fedscan.cli.server_commands import logs_command, run_command, server_app, status_command
from fedscan.cli.synth import synth
from fedscan.common import defaults
from fedscan.common.config import RunConfig
from fedscan.common.errors import ErrorCode, FedscanError

app = typer.Typer(
    name="fedscan",
    help="Federated, differentially private medical-imaging training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(certs_app, name="certs")
app.add_typer(server_app, name="server")
app.add_typer(client_app, name="client")
app.add_typer(data_app, name="data")
app.add_typer(privacy_app, name="privacy")
app.command("run")(run_command)
app.command("status")(status_command)
app.command("logs")(logs_command)
app.command("evaluate")(evaluate)
app.command("explain")(explain)
app.command("synth")(synth)


def _version(value: bool) -> None:
    if value:
        console.print(f"fedscan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the fedscan version and exit.",
        ),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Log level of fedscan's own messages.")
    ] = "WARNING",
) -> None:
    """Federated, differentially private medical-imaging training."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")


@app.command()
@with_run_options
def simulate(
    sites: Annotated[
        int | None,
        typer.Option(
            help=f"Number of simulated hospitals, ≥ 2 (default {defaults.SITES}; with "
            "dicom:DIR,DIR… the folders listed).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str,
        typer.Option(
            help="synthetic | synthetic-ct (chest-CT series, 3-D models) | npz:PATH | "
            "dicom:DIR_A,DIR_B,... (site folders, each with labels.csv) | dicom:DIR (a folder "
            "of site folders)."
        ),
    ] = "synthetic",
    partition: Annotated[
        str, typer.Option(help="How npz data is split: iid | dirichlet:ALPHA.")
    ] = "iid",
    images_per_site: Annotated[
        int | None,
        typer.Option(
            help=f"Images per synthetic site (default {defaults.IMAGES_PER_SITE}; synthetic-ct: "
            f"series per site, default {defaults.VOLUMES_PER_SITE}).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    ray_address: Annotated[
        str,
        typer.Option(
            help="Run on this existing Ray cluster (its head's HOST:PORT) instead of a private "
            "local one; every node must see the same paths (data, cache, $TMPDIR) and have the "
            "same fedscan installed.",
        ),
    ] = "",
    site_cpus: Annotated[int, typer.Option(help="CPUs Ray reserves for each simulated site.")] = 1,
    site_gpus: Annotated[
        float | None,
        typer.Option(
            help="Share of a GPU per site, 0–1 (default: one GPU shared by the sites on cuda).",
            show_default=False,
        ),
    ] = None,
    site_metrics: Annotated[
        str,
        typer.Option(
            help="The simulated sites' [privacy] metrics policy: dp, coarse, final-only or none.",
        ),
    ] = defaults.METRICS_POLICY,
    out: Annotated[Path, typer.Option(help="Where run directories are written.")] = Path("runs"),
    cache_dir: Annotated[
        str,
        typer.Option(help="Decode-once cache (default: $FEDSCAN_CACHE_DIR or ~/.cache/fedscan)."),
    ] = "",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Decode images every time; use no cache.")
    ] = False,
    no_dp: Annotated[
        bool, typer.Option("--no-dp", help="Train WITHOUT differential privacy (benchmarks only).")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's own logs.")] = False,
    resume: Annotated[
        str,
        typer.Option(
            help="Continue this run id (in --out) from its last checkpoint, with its own "
            "settings; other options are ignored."
        ),
    ] = "",
    *,
    settings: dict[str, Any],
) -> None:
    """Run a whole DP federation on this machine (default: 3 synthetic DICOM hospitals)."""
    from fedscan.cli.init_weights import checked_start
    from fedscan.cli.simulate import resume_simulation, run_simulation
    from fedscan.cli.simulation_sites import (
        DataChoice,
        Simulation,
        count_sites,
        synthetic_classes,
    )
    from fedscan.common.ingest.cache import default_cache_dir

    cache = "" if no_cache else (cache_dir or default_cache_dir())
    try:
        if resume:
            _print_summary(
                resume_simulation(out, resume, console=console, verbose=verbose, cache_dir=cache)
            )
            return
        choice = DataChoice.parse(data)
        if images_per_site is None:
            ct = choice.kind == "synthetic-ct"
            images_per_site = defaults.VOLUMES_PER_SITE if ct else defaults.IMAGES_PER_SITE
        simulation = Simulation(
            choice,
            count_sites(choice, sites),
            partition,
            images_per_site,
            device,
            ray_address,
            site_cpus,
            site_gpus,
            site_metrics,
        )
        config = RunConfig.from_options(
            **synthetic_classes(choice, settings),
            min_sites=simulation.sites,
            dp=False if no_dp else None,
        )
        config = checked_start(config, console)  # --init: the table, or one line and exit 2
        if no_dp:
            err_console.print(
                "[bold yellow]WARNING: differential privacy is OFF (--no-dp); "
                "updates can leak patient data. Never use this with real data.[/]"
            )
        summary = run_simulation(
            config, simulation, out=out, console=console, verbose=verbose, cache_dir=cache
        )
    except FedscanError as exc:
        raise fail(
            str(exc), EXIT_FAILED if exc.code == ErrorCode.RUN_FAILED else EXIT_USAGE
        ) from None
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    from fedscan.cli.summary import print_summary

    print_summary(console, summary)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run-id>).")],
    tensorboard: Annotated[
        bool, typer.Option(help="Also rebuild RUN_DIR/tensorboard event files.")
    ] = False,
    site_audit: Annotated[
        list[Path] | None,
        typer.Option(
            help="A site's audit summary (`fedscan privacy audit-export`) to attach to the run's "
            "model card; repeat for several sites.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """(Re)build report.html and model_card.md of a run from its run directory."""
    from fedscan.server.report import build_report, rebuild_events
    from fedscan.server.site_audits import attach

    try:
        attached = [attach(run_dir, summary) for summary in site_audit or []]
        written = [*build_report(run_dir), *([rebuild_events(run_dir)] if tensorboard else [])]
    except FedscanError as exc:
        raise fail(str(exc)) from None
    lines = [*(f"attached {path}" for path in attached), *(f"wrote {path}" for path in written)]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def run() -> None:
    """Console-script entry point.

    The command is a child subreaper (Linux), so helpers its daemons orphan (a Ray worker whose
    raylet died) stay below it and are stopped with it. Only here, in a process of its own:
    a test running a command in-process must not turn its test runner into one.
    """
    from fedscan.common.signals import become_subreaper

    become_subreaper()
    app(prog_name="fedscan")


if __name__ == "__main__":
    run()
