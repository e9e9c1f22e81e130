"""Sites' audit summaries attached to a run: ``fedscan report RUN_DIR --site-audit FILE``.

A site's empirical privacy audit stays at the site unless the site exports its summary
(``fedscan privacy audit-export``: :mod:`fedscan.common.audit_summary`) and hands the file over.
Attaching checks that the summary is of this run's ``final.pt`` (its SHA-256) and of this run
(its id), then keeps it as ``site_audits/<site>.json``; the model card lists every attached one.

Invariants: only a summary that passes :func:`~fedscan.common.audit_summary.checked` and matches
the run's final model is kept or shown; one per site (a later attachment replaces it). The card
says the figures are the site's own, on its own images, outside the run's DP accounting.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from fedscan.common.audit_summary import checked
from fedscan.common.errors import DataError
from fedscan.common.files import atomic_write_bytes, file_sha256
from fedscan.server.report_format import fmt
from fedscan.server.rundir import FINAL_MODEL

log = logging.getLogger(__name__)

SITE_AUDITS_DIR = "site_audits"


def attach(run_dir: Path, source: Path) -> Path:
    """Check the summary in ``source`` against the run in ``run_dir`` and keep it there."""
    try:
        document = checked(json.loads(Path(source).read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"Cannot read the audit summary {source.name} ({exc}); ask the site for the file "
            "`fedscan privacy audit-export` writes."
        ) from None
    final = Path(run_dir) / f"{FINAL_MODEL}.pt"
    if not final.is_file():
        raise DataError(f"{run_dir.name} has no {final.name}: attach audits to a completed run.")
    if document["checkpoint_sha256"] != file_sha256(final):
        raise DataError(
            f"The audit from {document['site']} is of another model (SHA-256 "
            f"{document['checkpoint_sha256'][:12]}…), not this run's {final.name}; ask the site to "
            "audit this run's final.pt and export that audit."
        )
    if document["run_id"] and document["run_id"] != run_dir.name:
        raise DataError(
            f"The audit names run {document['run_id']}, not {run_dir.name}; attach it to its run."
        )
    target = Path(run_dir) / SITE_AUDITS_DIR / f"{_file_name(document['site'])}.json"
    target.parent.mkdir(exist_ok=True)
    atomic_write_bytes(target, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    return target


def attached(run_dir: Path) -> list[dict[str, Any]]:
    """The run's attached summaries, by site; one that no longer checks is left out, logged."""
    folder = Path(run_dir) / SITE_AUDITS_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(checked(json.loads(path.read_text())))
        except (OSError, ValueError, DataError):
            log.warning("An attached site audit is unreadable and is left out: %s", path.name)
    return found


def card_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """The model card's section of attached audits (nothing when none is attached)."""
    if not summaries:
        return []
    lines = [
        "Empirical privacy audits, made by the sites on their own images (membership inference "
        "on this final model; each site's own figures, attached with its consent, outside the "
        "run's DP accounting):",
        "",
        "| site | attack | members / non-members | AUC | TPR @ 0.1 % FPR | TPR @ 1 % FPR | "
        "ε lower bound (δ) |",
        "|---|---|---|---|---|---|---|",
    ]
    for document in summaries:
        for attack in document["attacks"]:
            rates = [_rate(attack, level) for level in ("0.001", "0.01")]
            lines.append(
                f"| {document['site']} | {attack['attack']} | {document['members']} / "
                f"{document['non_members']} | {fmt(attack['auc'])} | {rates[0]} | {rates[1]} | "
                f"{attack['epsilon_lower_bound']:.2f} ({attack['delta']:g}) |"
            )
    note = (
        "A rate marked * is not resolved: fewer than 1 000 (100) non-members, so it is the TPR "
        "at zero false positives."
    )
    return [*lines, "", note, ""]


def _rate(attack: dict[str, Any], level: str) -> str:
    shown = f"{100 * attack['tpr_at_fpr'][level]:.2f} %"
    return shown if attack["fpr_resolved"][level] else f"{shown} *"


def _file_name(site: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", site) or "site"
