"""The audit summary a site may hand its coordinator: exactly its format, figures and counts."""

from __future__ import annotations

import json

import pytest

from fedscan.common.audit_summary import FORMAT, checked, summary
from fedscan.common.errors import DataError


def audit_record(checkpoint_sha256: str = "ab" * 32, run_id: str = "r-1") -> dict:
    """A site's audit record as `fedscan privacy audit` keeps it (client/privacy_audit)."""
    attack = {
        "auc": 0.53,
        "tpr_at_fpr": {"0.001": 0.004, "0.01": 0.018},
        "fpr_resolved": {"0.001": True, "0.01": True},
        "epsilon_lower_bound": 0.0,
        "delta": 1e-5,
        "confidence": 0.95,
        "members": 1000,
        "non_members": 1000,
    }
    return {
        "created_at": "2026-12-07T10:00:00Z",
        "run_id": run_id,
        "checkpoint_sha256": checkpoint_sha256,
        "dp": True,
        "target_epsilon": 8.0,
        "members": 1000,
        "non_members": 1000,
        "mean_loss_members": 0.31,
        "shadows": 8,
        "attacks": [
            {**attack, "attack": "loss threshold"},
            {**attack, "attack": "LiRA offline", "auc": 0.51},
        ],
    }


def test_a_summary_keeps_the_figures_and_counts_and_nothing_else() -> None:
    # Execute
    document = summary(audit_record(), "st-marys")
    # Assert
    assert document["format"] == FORMAT and document["site"] == "st-marys"
    assert [a["auc"] for a in document["attacks"]] == [0.53, 0.51]
    assert "mean_loss_members" not in json.dumps(document)  # a loss is no figure of the attack
    assert checked(json.loads(json.dumps(document))) == document


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(format="other/1"),
        lambda d: d.update(paths=["/data/IM1.dcm"]),
        lambda d: d["attacks"][0].update(scores=[0.1, 0.9]),
        lambda d: d["attacks"][0].update(auc=1.7),
        lambda d: d.update(members=-1),
        lambda d: d.update(attacks=[]),
    ],
)
def test_anything_else_is_refused_with_what_to_do(damage) -> None:
    # Setup
    document = summary(audit_record(), "st-marys")
    damage(document)
    # Execute / Assert
    with pytest.raises(DataError, match="audit summary|audit-export|export"):
        checked(document)
