"""The summary of a site's empirical privacy audit that the site may hand to its coordinator.

``fedscan privacy audit`` keeps its record at the site: results stay local. A site that wants its
audit shown in the run's model card exports a summary of it by hand (``fedscan privacy
audit-export``), and the coordinator's operator attaches that file to the run (``fedscan report
RUN_DIR --site-audit FILE``). This module is the file's one format, for both roles.

Invariants:
- A summary holds figures and counts only: the site's name, the run id, the audited checkpoint's
  SHA-256, whether the run trained under DP and its target ε, the member and non-member counts,
  and each attack's AUC, TPR at 0.1 % and 1 % FPR, whether the non-members resolve those rates,
  and the ε lower bound with its δ. No path, identifier, score or loss of any image.
- :func:`checked` accepts exactly that shape (unknown keys included) or raises a
  :class:`DataError` saying what to do; a run's model card shows only checked summaries.
"""

from __future__ import annotations

import math
from typing import Any

from fedscan.common.errors import DataError

FORMAT = "fedscan-audit-summary/1"
FPR_KEYS = ("0.001", "0.01")  # the FPR levels a summary carries: 0.1 % and 1 %
_TOP = ("format", "site", "run_id", "checkpoint_sha256", "dp", "target_epsilon", "created_at")
_COUNTS = ("members", "non_members", "shadows")
_ATTACK = ("attack", "auc", "tpr_at_fpr", "fpr_resolved", "epsilon_lower_bound", "delta")


def summary(record: dict[str, Any], site: str) -> dict[str, Any]:
    """The shareable summary of an audit record (``client/privacy_audit``) made at ``site``."""
    attacks = [
        {
            "attack": str(found["attack"]),
            "auc": float(found["auc"]),
            "tpr_at_fpr": {key: float(found["tpr_at_fpr"][key]) for key in FPR_KEYS},
            "fpr_resolved": {key: bool(found["fpr_resolved"][key]) for key in FPR_KEYS},
            "epsilon_lower_bound": float(found["epsilon_lower_bound"]),
            "delta": float(found["delta"]),
        }
        for found in record["attacks"]
    ]
    return checked(
        {
            "format": FORMAT,
            "site": site,
            "run_id": str(record.get("run_id") or ""),
            "checkpoint_sha256": str(record["checkpoint_sha256"]),
            "dp": bool(record["dp"]),
            "target_epsilon": record.get("target_epsilon"),
            "created_at": str(record["created_at"]),
            **{key: int(record[key]) for key in _COUNTS},
            "attacks": attacks,
        }
    )


def checked(document: Any) -> dict[str, Any]:
    """``document`` when it is a summary of this format, exactly; else a :class:`DataError`."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DataError(
            f"This is not a fedscan audit summary ({FORMAT}); ask the site for the file "
            "`fedscan privacy audit-export` writes."
        )
    expected = {*_TOP, *_COUNTS, "attacks"}
    if set(document) != expected:
        extra = sorted(set(document) ^ expected)
        raise DataError(
            f"The audit summary has other fields than its format allows ({', '.join(extra)}); "
            "ask the site to export it again with `fedscan privacy audit-export`."
        )
    attacks = document["attacks"]
    if not isinstance(attacks, list) or not attacks or not all(map(_attack_ok, attacks)):
        raise DataError(
            "The audit summary's attacks are malformed; ask the site to export it again."
        )
    if not all(isinstance(document[key], int) and document[key] >= 0 for key in _COUNTS):
        raise DataError("The audit summary's counts are malformed; ask the site to export again.")
    return document


def _attack_ok(found: Any) -> bool:
    if not isinstance(found, dict) or set(found) != set(_ATTACK):
        return False
    rates, resolved = found["tpr_at_fpr"], found["fpr_resolved"]
    return (
        isinstance(rates, dict)
        and isinstance(resolved, dict)
        and set(rates) == set(resolved) == set(FPR_KEYS)
        and all(_unit(value) for value in [found["auc"], *rates.values()])
        and isinstance(found["epsilon_lower_bound"], (int, float))
        and math.isfinite(found["epsilon_lower_bound"])
    )


def _unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0
