"""A hospital's ClientApp in its own process, for crash tests: ``python -m tests.site_process``.

Arguments: SITE_DIR STATE_DIR FIRST_ROUND LAST_ROUND. Trains those rounds of one run
("crash-run"), printing ``start N`` before each and a JSON line after it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedscan.client.app import make_client_app
from fedscan.common.config import RunConfig
from fedscan.common.data.sources import FolderSource
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from tests.helpers import instruction, node_context, site_resolver

RUN_ID = "crash-run"


def main(site_dir: str, state_dir: str, first: int, last: int) -> None:
    app = make_client_app(
        site_resolver([FolderSource("site-k", site_dir)], Path(state_dir)), device="cpu"
    )
    config = RunConfig(
        rounds=last,
        train=TrainSettings(local_epochs=4, batch_size=8, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    arrays = ArrayRecord(build_model("small-cnn", seed=0).state_dict())
    for server_round in range(first, last + 1):
        print(f"start {server_round}", flush=True)
        settings = {**config.to_message(), "server-round": server_round, "run-id": RUN_ID}
        reply = app(
            instruction(RecordDict({"arrays": arrays, "config": ConfigRecord(settings)}), "train"),
            node_context(1, 0),
        )
        if reply.has_error():
            print(json.dumps({"round": server_round, "error": reply.error.reason}), flush=True)
            continue
        print(
            json.dumps({"round": server_round, "epsilon": reply.content["metrics"]["epsilon"]}),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
