"""``fedscan privacy audit-export``: the site hands its coordinator the summary of one audit.

The audit records stay at the site (``state-dir/audits/``, written by
:mod:`fedscan.client.privacy_audit`). On the site's own decision, this writes the summary of the
newest audit of a checkpoint (:mod:`fedscan.common.audit_summary`: figures and counts only) to a
file its staff send on; the coordinator attaches it to the run's model card.

Invariant: the export is a release, so it is recorded in the site's audit log (action
``audit-export``, the run, the checkpoint's and the summary's SHA-256) before the file is
written; a failed log append writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedscan.client.audit import AuditLog
from fedscan.client.site_config import SiteConfig
from fedscan.common.audit_summary import summary
from fedscan.common.errors import DataError
from fedscan.common.files import atomic_write_bytes, file_sha256

AUDIT_DIR = "audits"  # under the site's state dir: one JSON record per audit, newest last by name


def audit_records(state_dir: Path) -> Iterator[dict[str, Any]]:
    """The site's audit records, newest first; a damaged one is skipped."""
    folder = Path(state_dir) / AUDIT_DIR
    for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            yield found


def export_audit(config: SiteConfig, out: Path, *, checkpoint: Path | None) -> dict[str, Any]:
    """Write the summary of the newest audit (of ``checkpoint``, when given) to ``out``, after
    recording the export in the audit log; return the summary."""
    wanted = file_sha256(checkpoint) if checkpoint is not None else None
    record = next(
        (
            r
            for r in audit_records(config.state_dir)
            if wanted in (None, r.get("checkpoint_sha256"))
        ),
        None,
    )
    if record is None:
        which = "of this checkpoint " if checkpoint is not None else ""
        raise DataError(
            f"This site has no audit {which}to export; run `fedscan privacy audit --checkpoint "
            "final.pt --config site.toml` first."
        )
    try:
        document = summary(record, config.name)
    except (KeyError, TypeError, ValueError, DataError):
        raise DataError(
            "The site's audit record is incomplete or damaged; run `fedscan privacy audit` again."
        ) from None
    body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    AuditLog(config.state_dir).append(
        {
            "event": "export",
            "run": document["run_id"],
            "round": 0,
            "action": "audit-export",
            "checkpoint": document["checkpoint_sha256"],
            "summary": hashlib.sha256(body).hexdigest(),
        }
    )
    try:
        atomic_write_bytes(Path(out), body)
    except OSError as exc:
        raise DataError(
            f"Cannot write the audit summary ({exc.strerror}); choose another --out file."
        ) from None
    return document
