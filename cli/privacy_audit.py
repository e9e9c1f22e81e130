"""``fedscan privacy audit``: membership-inference attacks on a model at the site
(:mod:`fedscan.client.privacy_audit`), as a table or JSON. Nothing is sent anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedscan.cli.console import console, err_console, fail, print_table
from fedscan.common.errors import FedscanError
from fedscan.common.files import json_safe

_DEFAULT_SHADOWS = 8  # fedscan.client.privacy_audit.DEFAULT_SHADOWS (not imported: torch)


def privacy_audit(
    checkpoint: Annotated[
        Path, typer.Option(help="The model to audit: final.pt (final.json beside it).")
    ],
    config: Annotated[Path, typer.Option(help="The site's site.toml.")],
    shadows: Annotated[
        int,
        typer.Option(
            help="Shadow models trained here on random halves of the site's images (an even "
            "number; each trains as the run did, so this many times a run's local training)."
        ),
    ] = _DEFAULT_SHADOWS,
    seed: Annotated[int, typer.Option(help="Seed of the shadows' random halves.")] = 0,
    device: Annotated[
        str | None,
        typer.Option(help="auto | cpu | cuda (default: the site's).", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Attack a model with membership inference on this site's own images (training split:
    members; validation split: non-members) and print the attacks' AUC, TPR at 0.1 % and 1 % FPR
    and the ε lower bound they prove. Results stay at the site (state-dir/audits/)."""
    from fedscan.client.privacy_audit import privacy_audit as run_audit
    from fedscan.client.site_config import load_site_config

    try:
        site = load_site_config(config)
        with _ShadowProgress() as advance:
            record = run_audit(
                checkpoint, site, shadows=shadows, seed=seed, device=device, progress=advance
            )
    except FedscanError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(json_safe(record), indent=2))
    else:
        print_audit(console, record)


class _ShadowProgress:
    """A transient progress bar on stderr while the shadows train."""

    def __enter__(self) -> Any:
        from rich.progress import Progress

        self.bar = Progress(console=err_console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("Training shadow models", total=None)
        return self.advance

    def advance(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


_LEVELS = (("0.001", "0.1 %", "1 000"), ("0.01", "1 %", "100"))  # key, FPR, non-members it needs


def _tpr(attack: dict[str, Any], level: str) -> str:
    """TPR at an FPR level as a percentage, ``*`` when the non-members cannot resolve it."""
    starred = "" if attack["fpr_resolved"][level] else " *"
    return f"{100 * attack['tpr_at_fpr'][level]:.2f} %{starred}"


def print_audit(on: Console, record: dict[str, Any]) -> None:
    """One row per attack; what the figures rest on below it."""
    title = f"Membership-inference audit of run {record.get('run_id') or '?'} at {record['site']}"
    table = Table(
        *("attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR", "ε lower bound"),
        *("members", "non-members", "shadows"),
        title=title,
        title_justify="left",
    )
    for attack in record["attacks"]:
        table.add_row(
            *(attack["attack"], f"{attack['auc']:.3f}", _tpr(attack, "0.001")),
            *(_tpr(attack, "0.01"), f"{attack['epsilon_lower_bound']:.2f}"),
            *(str(attack["members"]), str(attack["non_members"]), str(record["shadows"])),
        )
    print_table(table, on)
    unresolved = [
        f"{fpr} FPR (needs {needed})"
        for level, fpr, needed in _LEVELS
        if not record["attacks"][0]["fpr_resolved"][level]
    ]
    if unresolved:
        _say(
            on,
            f"* {record['non_members']} non-members are too few to resolve "
            f"{' or '.join(unresolved)}: the figure is the TPR at zero false positives.",
        )
    dp = f"DP at ε {record['target_epsilon']:g}" if record["dp"] else "no DP"
    _say(
        on,
        f"{record['shadows']} shadow models of {_epochs(record['shadow_epochs'])} each, {dp} "
        f"(settings from {record['settings_from']}); LiRA queried {record['query_views']} views "
        f"of each image. ε lower bound: 95 % Clopper–Pearson at δ "
        f"{record['attacks'][0]['delta']:g}, an empirical lower bound, not a proof. Results are "
        "kept at this site only.",
    )


def _epochs(count: int) -> str:
    return f"{count} epoch" + ("" if count == 1 else "s")


def _say(on: Console, text: str) -> None:
    on.print(text, highlight=False, soft_wrap=True)
