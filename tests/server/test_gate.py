"""The update sanity gate on hand-made updates: each refusal reason, and what must pass."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.server.gate import Candidate, UpdateGate, update_norm

SENT = {
    "w": np.zeros((3, 2), np.float32),
    "b": np.zeros(2, np.float32),
    "count": np.zeros(1, np.int64),
}


def _update(scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (scale * rng.normal(size=(3, 2))).astype(np.float32),
        "b": (scale * rng.normal(size=2)).astype(np.float32),
        "count": np.ones(1, np.int64),
    }


def test_honest_updates_pass_and_outliers_malformed_or_overclaiming_ones_do_not() -> None:
    gate = UpdateGate(norm_factor=5.0)
    nan = _update(1, 4)
    nan["w"][0, 0] = np.nan
    wrong_dtype = {
        **_update(1, 5),
        "b": np.zeros(2, np.int64),
    }  # float64 for float32 would pass (FedAdam)
    candidates = [Candidate(f"honest-{i}", _update(1, i), 100) for i in range(4)]
    candidates += [
        Candidate(
            "flipped",
            {k: -50 * v if v.dtype.kind == "f" else v for k, v in _update(1, 9).items()},
            100,
        ),
        Candidate("nan", nan, 100),
        Candidate("dtype", wrong_dtype, 100),
        Candidate("missing", {"w": SENT["w"]}, 100),
    ]
    refused = gate.refusals(candidates, SENT)
    assert refused == {
        "flipped": "update-norm-outlier",
        "nan": "non-finite-values",
        "dtype": "wrong-shape-or-dtype",
        "missing": "wrong-parameters",
    }
    again = gate.refusals(
        [Candidate("honest-0", _update(1, 0), 101), Candidate("honest-1", _update(1, 1), 100)], SENT
    )
    assert again == {"honest-0": "num-examples-grew"}  # the first round's 100 is what it declared


def test_the_norm_check_needs_three_updates_and_can_be_turned_off() -> None:
    pair = [Candidate("a", _update(1, 0), 10), Candidate("b", _update(100, 1), 10)]
    assert UpdateGate(norm_factor=5.0).refusals(pair, SENT) == {}  # a median of two means nothing
    three = pair + [Candidate("c", _update(1, 2), 10)]
    assert UpdateGate(norm_factor=5.0).refusals(three, SENT) == {"b": "update-norm-outlier"}
    assert UpdateGate(norm_factor=0.0).refusals(three, SENT) == {}
    assert update_norm(_update(2, 0), SENT) == pytest.approx(
        2 * update_norm(_update(1, 0), SENT), rel=1e-5
    )
