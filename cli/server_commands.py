"""The coordinator operator's commands: ``fedscan server start|sites``, ``fedscan run``,
``status``, ``logs``.

Argument parsing and printing only: the work is in :mod:`fedscan.server` (the SuperLink, the site
registry, launching and following runs), imported when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fedscan.cli.console import (
    EXIT_FAILED,
    EXIT_PARTIAL,
    console,
    err_console,
    fail,
    print_table,
)
from fedscan.common.errors import FedscanError

if TYPE_CHECKING:
    from fedscan.server.coordinator_config import CoordinatorConfig
    from fedscan.server.rundir import RunDirectory

server_app = typer.Typer(
    help="The coordinator: start it, manage which sites may join.", no_args_is_help=True
)
sites_app = typer.Typer(help="Sites allowed to join (their public keys).", no_args_is_help=True)
server_app.add_typer(sites_app, name="sites")
CoordinatorToml = Annotated[
    Path, typer.Option("--config", help="The coordinator's coordinator.toml.")
]


def _coordinator(path: Path) -> CoordinatorConfig:
    from fedscan.server.coordinator_config import load_coordinator_config

    try:
        return load_coordinator_config(path)
    except FedscanError as exc:
        raise fail(str(exc)) from None


@server_app.command("start")
def server_start(
    config: CoordinatorToml,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="No TLS, no site authentication: local experiments only."),
    ] = False,
) -> None:
    """Run the coordinator (Flower SuperLink) in the foreground until stopped."""
    from fedscan.server.superlink import serve

    coordinator = _coordinator(config)
    if insecure:
        err_console.print(
            "[bold yellow]WARNING: --insecure: sites connect WITHOUT TLS and WITHOUT "
            "authentication. Never use this outside a local experiment.[/]"
        )
    try:
        code = serve(coordinator, insecure=insecure)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


@server_app.command("audit")
def server_audit(
    run_id: Annotated[str, typer.Argument(help="A run id from `fedscan status`.")],
    config: CoordinatorToml,
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check the hash chain; exit 1 naming the first bad entry."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the entries as JSON lines.")
    ] = False,
) -> None:
    """What the coordinator sent to each site and received, hash-chained (compare with a site's
    `fedscan client audit`)."""
    from fedscan.cli.audit_table import checked, print_audit
    from fedscan.server.audit import RunAudit

    folder = _coordinator(config).runs_dir / run_id
    if not folder.is_dir():
        raise fail(f"No run {run_id!r} on this coordinator; `fedscan status` lists its runs.")
    audit = RunAudit(folder)
    if as_json:
        for entry in audit.entries():
            print(json.dumps(entry, sort_keys=True))
    else:
        print_audit(console, audit.entries(), audit.path)
    if verify:
        console.print(checked(audit.verify(), "the run directory's"))


@sites_app.command("add")
def sites_add(name: str, public_key: Path, config: CoordinatorToml) -> None:
    """Allow the site NAME, identified by its KEY.pub (made with `fedscan certs site NAME`)."""
    from fedscan.server.site_registry import add_site

    try:
        entry = add_site(_coordinator(config), name, public_key)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"site {name} registered (node {entry['node_id']}, key {entry['key_sha256']})",
        highlight=False,
        soft_wrap=True,
    )


@sites_app.command("list")
def sites_list(config: CoordinatorToml) -> None:
    """Registered sites and whether they are online."""
    from fedscan.server.site_registry import list_sites

    try:
        rows = list_sites(_coordinator(config))
    except FedscanError as exc:
        raise fail(str(exc)) from None
    table = Table(title="Registered sites")
    for header in ("site", "status", "online since", "node", "key", "added"):
        table.add_column(header)
    for row in rows:
        table.add_row(
            row["name"],
            row["status"],
            row["online_at"],
            row["node_id"],
            row["key_sha256"],
            row["added"],
        )
    print_table(table)


@sites_app.command("remove")
def sites_remove(name: str, config: CoordinatorToml) -> None:
    """Stop accepting the site NAME."""
    from fedscan.server.site_registry import remove_site

    try:
        remove_site(_coordinator(config), name)
    except FedscanError as exc:
        raise fail(str(exc)) from None
    console.print(f"site {name} removed", highlight=False)


def run_command(
    config: Annotated[
        Path, typer.Option("--config", help="run.toml: [run] settings and coordinator-config.")
    ],
    timeout: Annotated[
        float, typer.Option(help="Stop following after this many seconds (the run goes on).")
    ] = 86400.0,
    resume: Annotated[
        str,
        typer.Option(
            help="Continue this run id from its last checkpoint "
            "(after the coordinator stopped), with its own "
            "settings."
        ),
    ] = "",
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Start round 1 from these weights (an earlier run's final.pt, or a PyTorch/MONAI "
            "state dict) instead of run.toml's init-weights or random ones; checked and its table "
            "printed before the run is submitted.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Submit a run to the coordinator and follow it round by round; exit 0 only if it completed
    (3 if it completed with gaps)."""
    from fedscan.common.signals import StopSignals
    from fedscan.server.follow import COORDINATOR_GONE

    progress: dict[str, RunDirectory] = {}
    if resume and init is not None:
        raise fail("--resume continues a run with its own starting weights; leave out --init.")
    try:
        # SIGTERM/SIGHUP end it as Ctrl-C does: a `flwr` call in flight is stopped with it.
        with StopSignals(interrupt=True):
            status = _submit_and_follow(config, timeout, resume, progress, init)
    except KeyboardInterrupt:
        raise fail(
            "Stopped following; the run goes on at the coordinator (`fedscan status`).", 130
        ) from None
    except FedscanError as exc:
        run_dir = progress.get("run")
        hint = (
            f"\nRestart the coordinator, then continue with `fedscan run --config {config} "
            f"--resume {run_dir.run_id}`."
            if run_dir is not None and exc.code == COORDINATOR_GONE
            else ""
        )
        raise fail(f"{exc}{hint}") from None
    _run_summary(progress["run"], status)


def _submit_and_follow(
    config: Path,
    timeout: float,
    resume: str,
    progress: dict[str, RunDirectory],
    init: Path | None = None,
) -> dict[str, Any]:
    """Submit (or resume) the run and follow it to its end; its run directory goes in
    ``progress["run"]`` as soon as it exists."""
    from dataclasses import replace

    from fedscan.cli.display import RoundTable
    from fedscan.cli.init_weights import checked_start
    from fedscan.server.follow import follow
    from fedscan.server.launch import load_run_request, submit

    request = load_run_request(config, init_weights=init)
    if not resume:  # a resumed run keeps the starting weights it recorded
        request = replace(request, run=checked_start(request.run, console))
    run_dir, flower_run_id = submit(request, resume_id=resume or None)
    progress["run"] = run_dir
    console.print(
        f"Run {run_dir.run_id} (Flower run {flower_run_id}) "
        f"{'resumed' if resume else 'submitted'} → {run_dir.path}",
        highlight=False,
    )
    segmentation = request.run.train.task == "segmentation"
    with RoundTable(console, [], segmentation=segmentation) as table:
        return follow(
            request, run_dir, flower_run_id, table.update, on_event=table.event, timeout_s=timeout
        )


def _run_summary(run_dir: RunDirectory, status: dict[str, Any]) -> None:
    """The end of ``fedscan run``: the final metrics, the state, every gap; the exit code."""
    from fedscan.cli.summary import final_line, gap_lines
    from fedscan.server.rundir import (
        FINAL_MODEL,
        REPORT_FILE,
        STATE_COMPLETED,
        STATE_COMPLETED_WITH_GAPS,
    )

    state = status.get("state")
    if state not in (STATE_COMPLETED, STATE_COMPLETED_WITH_GAPS):
        raise fail(
            f"Run {run_dir.run_id} failed: {status.get('reason', 'unknown reason')}", EXIT_FAILED
        )
    history = [line for line in run_dir.read_metrics() if "aggregated" in line]
    if history:
        console.print(final_line(history[-1]), highlight=False)
    for line in gap_lines(str(state), status.get("gaps", [])):
        console.print(line, highlight=False)
    console.print(
        f"Run {run_dir.run_id} {state}: {run_dir.model_file(FINAL_MODEL)}; report: "
        f"{run_dir.file(REPORT_FILE)}",
        highlight=False,
    )
    if state == STATE_COMPLETED_WITH_GAPS:
        raise typer.Exit(EXIT_PARTIAL)


def status_command(config: CoordinatorToml) -> None:
    """Runs on this coordinator: state (or what a running run is doing) and rounds completed."""
    from fedscan.server.launch import run_statuses

    table = Table(title="Runs")
    for header in ("run", "state", "rounds", "reason"):
        table.add_column(header)
    for row in run_statuses(_coordinator(config)):
        table.add_row(row["run_id"], row["state"], str(row["rounds"]), row["reason"])
    print_table(table)


def logs_command(
    run_id: Annotated[str, typer.Argument(help="A run id from `fedscan status`.")],
    config: CoordinatorToml,
) -> None:
    """The coordinator-side log of a run (Flower's ServerApp log)."""
    from fedscan.server.launch import flower_run_ids_of, server_log

    coordinator = _coordinator(config)
    try:
        # The first submission, then each resume. Each record once, as Flower stores it: raw
        # text, not through rich (which rewrites ":name:" as emoji); a log is read by grep too.
        for flower_run_id in flower_run_ids_of(coordinator, run_id):
            text = server_log(coordinator, flower_run_id)
            typer.echo(text, nl=not text.endswith("\n"))
    except FedscanError as exc:
        raise fail(str(exc)) from None
