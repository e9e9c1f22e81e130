"""The round-1 global model: the same for the same seed and starting weights.

Invariants:

- The model is the run's, built with the run's seed; with ``init-weights`` the coordinator (and
  only it) loads the file's matching parameters into it
  (:func:`fedscan.common.models.warm_start.start_state`), after checking the file against the
  SHA-256 the run recorded. Sites receive the result as round 1's global model, as today.
- What the file gave (loaded, new, ignored) is written to ``init-weights.json`` (the model card's
  source) and told as one event (``fedscan run`` prints it); the coordinator's log has the table.
- The classical models' feature standardisation comes from the sites, after the weights.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedscan.common.config import RunConfig
from fedscan.common.models.registry import get_model_spec
from fedscan.common.models.warm_start import start_state
from fedscan.common.models.weight_match import IGNORED, LOADED, NEW, WeightMatch
from fedscan.server.coverage import RecordingGrid, feature_statistics_gap
from fedscan.server.run_log import RunLog
from fedscan.server.rundir import INIT_WEIGHTS_FILE, Event, RunProgress

log = logging.getLogger(__name__)


def initial_arrays(
    grid: Grid,
    config: RunConfig,
    run_log: RunLog,
    message_config: dict[str, Any],
    progress: RunProgress,
) -> ArrayRecord:
    """The round-1 global model as Flower sends it."""
    state, match = start_state(config)
    if match is not None:
        record_start(progress, match)
    arrays = ArrayRecord(state)
    if not get_model_spec(config.train.model).classical:
        return arrays
    from fedscan.server.feature_stats import standardise

    recorded = RecordingGrid(grid)
    arrays = standardise(recorded, config, run_log, arrays, message_config)
    gap = feature_statistics_gap(
        recorded, run_log.names, timeout_s=config.round_timeout_s, dp=config.privacy.enabled
    )
    if gap is not None:
        log.warning("The run has a gap: %s", gap.sentence())
        run_log.gaps.append(gap)
    return arrays


def record_start(progress: RunProgress, match: WeightMatch) -> None:
    """``init-weights.json`` and the event that tells what the starting weights gave."""
    progress.run_dir.write_json(INIT_WEIGHTS_FILE, match.to_json())
    counts = match.counts()
    progress(
        Event.INIT_WEIGHTS_LOADED,
        sha256=match.sha256,
        loaded=counts[LOADED],
        new=counts[NEW],
        ignored=counts[IGNORED],
    )
