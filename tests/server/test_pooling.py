"""The round pool's binary figures: the stored threshold by the run's rule, and the Platt map."""

from __future__ import annotations

import numpy as np
import pytest

from fedscan.common.metrics.calibration import Calibration, recalibration
from fedscan.common.metrics.histogram import ScoreHistogram, youden_threshold
from fedscan.server.pooling import RoundPool


def _site_lists(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(rng.normal(-1, 1.5, n) + 2 * labels)))
    return {"sensitivity": 0.5, **ScoreHistogram.of(scores, labels).to_lists()}


@pytest.mark.parametrize("rule", ["youden", "sensitivity:0.9"])
def test_the_pool_stores_the_threshold_of_its_rule_and_the_map_of_the_summed_histogram(
    rule: str,
) -> None:
    # Prepare
    pool = RoundPool(operating_point=rule)
    sites = {"a": _site_lists(1, 400), "b": _site_lists(2, 250)}
    total = ScoreHistogram.from_lists(sites["a"]) + ScoreHistogram.from_lists(sites["b"])
    # Execute
    for name, metrics in sites.items():
        assert pool.take(name, metrics) is None
    pooled, threshold, document = pool.close(650)
    # Assert
    assert pooled is not None and document is not None and threshold is not None
    if rule == "youden":
        assert threshold == youden_threshold(total)
    else:
        assert pooled["sensitivity"] >= 0.9
        assert threshold > 0 and pooled["specificity"] > 0
    assert Calibration.from_json(document["calibration"]) == recalibration(total)
    assert pooled["ece-calibrated"] < pooled["ece"]
