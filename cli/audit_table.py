"""``fedscan client audit`` and ``runs`` tables: what was asked, what left, what runs wait."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from fedscan.cli.console import EXIT_FAILED, fail, print_table
from fedscan.common.audit_chain import Verdict

if TYPE_CHECKING:
    from fedscan.common.site_settings import SiteSettings


def checked(verdict: Verdict, holder: str) -> str:
    """The line for a log that verifies; a failure (exit 1) naming the first bad line if not."""
    if not verdict.ok:
        where = f"line {verdict.line}: " if verdict.line else ""
        raise fail(f"The audit log does not verify: {where}{verdict.problem}.", EXIT_FAILED)
    return f"The audit log verifies: {verdict.entries} entries chained to {holder} head."


def print_audit(console: Console, entries: list[dict[str, Any]], path: Path) -> None:
    table = Table(
        "#",
        "time (UTC)",
        "event",
        "run",
        "round",
        "action",
        "decision",
        "arrays",
        "ε before → after",
        title=f"Audit log {path}",
        title_justify="left",
    )
    for entry in entries:
        table.add_row(
            str(entry.get("seq", "")),
            str(entry.get("time", "")),
            " ".join(str(entry.get(k, "")) for k in ("event", "site") if entry.get(k)),
            str(entry.get("run", "")),
            str(entry.get("round", "")),
            str(entry.get("action", "")),
            _decision(entry),
            _arrays(entry.get("arrays") or {}),
            _epsilon(entry),
        )
    print_table(table, console)


def _decision(entry: dict[str, Any]) -> str:
    if entry.get("event") != "reply":
        return ""
    code = entry.get("code")
    return f"{entry.get('decision', '')} ({code})" if code else str(entry.get("decision", ""))


def _arrays(records: dict[str, dict[str, Any]]) -> str:
    """ "N tensors, ‖·‖ x" per record: the sizes and norms that left, not their values."""
    parts = []
    for name, arrays in records.items():
        norms = [a["norm"] for a in arrays.values() if isinstance(a.get("norm"), (int, float))]
        total = sum(n * n for n in norms) ** 0.5
        parts.append(f"{name}: {len(arrays)} tensors, ‖·‖ {total:.3g}")
    return "; ".join(parts)


def _epsilon(entry: dict[str, Any]) -> str:
    if "epsilon" not in entry:
        return ""
    after, before = _number(entry["epsilon"]), entry.get("epsilon_before")
    return after if before is None else f"{_number(before)} → {after}"


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)  # "inf" is a string


def _starting_weights(settings: SiteSettings) -> str:
    """The SHA-256 of the weights the coordinator starts from (compare it with the file you were
    given: `sha256sum final.pt`), or the seed's random weights."""
    if settings.init_weights_sha256:
        return f"SHA-256 {settings.init_weights_sha256}"
    return f"random (seed {settings.train.seed})"


def print_runs(console: Console, runs: list[dict[str, Any]]) -> None:
    """One small table per run the site has seen (newest first); a pending one with what it
    would spend. Rows, not columns: it fits a terminal."""
    for run in runs:
        settings = run["parsed"]
        train, privacy = settings.train, settings.privacy
        spend = run.get("spend") or {}
        table = Table("", "", title=f"Run {run['run_id']}", title_justify="left", show_header=False)
        rows = [
            ("state", run["state"] + (f" (by {run['by']})" if run.get("by") else "")),
            ("configuration hash", run["config_hash"]),
            ("model / task", f"{train.model} / {train.task}"),
            ("rounds × local epochs", f"{settings.rounds} × {train.local_epochs}"),
            ("batch, learning rate", f"{train.batch_size}, {train.learning_rate:g}"),
            ("ε, δ", f"{privacy.epsilon:g}, {privacy.delta:g}" if privacy.enabled else "no DP"),
            ("cross-site validation", "yes" if settings.cross_site else "no"),
            ("starting weights", _starting_weights(settings)),
        ]
        if "noise_multiplier" in spend:
            rows += [
                ("planned σ, releases", f"{spend['noise_multiplier']:.4f}, {spend['releases']}"),
                (
                    "lifetime ε after it / budget",
                    f"{_number(spend['epsilon_lifetime_after'])} / "
                    f"{_number(spend['lifetime_budget'])}",
                ),
            ]
        elif spend:
            rows.append(("cannot train", str(spend.get("refusal", ""))))
        for row in rows:
            table.add_row(*row)
        print_table(table, console)
    if not runs:
        console.print("No run has reached this site yet.")
