"""Which calibration map an evaluation at the site applies: the one stored with the model (fitted
on the federation's pooled validation histogram), or one the site fitted on its own images."""

from __future__ import annotations

import json
from pathlib import Path

from fedscan.common.errors import ConfigError
from fedscan.common.metrics.calibration import Calibration


def stored_map(meta: dict) -> Calibration:
    """The Platt map stored with the model (the identity, saying why, for an older model)."""
    try:
        return Calibration.from_json(meta.get("calibration"))
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"The checkpoint's calibration map is unusable: {error}") from None


def map_from_file(path: Path) -> Calibration:
    """A map saved from an earlier evaluation's ``local_calibration`` (JSON)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return Calibration.from_json(document.get("local_calibration", document))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"--calibration {path.name}: not a calibration map ({error}); give a JSON file "
            'holding {"method": "platt", "slope": …, "intercept": …}, e.g. the '
            "local_calibration of an earlier `fedscan evaluate`."
        ) from None
