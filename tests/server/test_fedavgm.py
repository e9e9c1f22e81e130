"""FedAvgM: the server's momentum is part of the state a resumed coordinator restores (a killed
run resumes to the same weights: tests/server/test_resume.py, -m slow for FedAvgM)."""

from __future__ import annotations

import numpy as np

from fedscan.server.strategy import RecordingFedAvgM


def test_fedavgm_momentum_survives_a_checkpoint() -> None:
    strategy = RecordingFedAvgM(server_momentum=0.5)
    assert strategy.checkpoint_state() == ({}, {})  # before the first aggregate: no momentum
    strategy.momentum_vector = [np.full((2, 3), 0.25), np.arange(4.0)]
    scalars, tensors = strategy.checkpoint_state()
    resumed = RecordingFedAvgM(server_momentum=0.5)
    resumed.restore_state(scalars, tensors)
    assert resumed.momentum_vector is not None
    assert all(
        np.array_equal(a, b)
        for a, b in zip(strategy.momentum_vector, resumed.momentum_vector, strict=True)
    )
