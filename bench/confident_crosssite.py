"""A real federation whose local models are confident: does the cross-site matrix pool them right?

fedscan 0.1 pooled a local model that scored AUC 0.95 at two sites to exactly 0.500: its scores
sat inside the first of 1 000 linear bins. This runs a no-DP federation on PneumoniaMNIST whose
cross-site fine-tune trains many local epochs (so the local models are confident), records each
local model as its site sends it, and prints per model: the matrix's per-site AUCs and pooled AUC
(from the summed logit-binned histograms), the AUC of the same model's scores computed directly on
all sites' validation images together, and how far out its logits lie.

    .venv/bin/python bench/confident_crosssite.py --local-epochs 15 --learning-rate 0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from npz_federation import npz_federation

from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.imageset import ImageSet
from fedscan.common.data.npz import load_npz_shard
from fedscan.common.metrics.classification import predict, rank_auc
from fedscan.common.models.networks import build_model
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.inprocess import flower_identity

SITES, PARTITION, SIZE = 3, "dirichlet:0.5", 64


class KeepFineTunes:
    """Passes every message to the site's app and keeps the cross-site fine-tune's reply
    (round ``rounds`` + 1) of each site."""

    def __init__(self, app: Any, rounds: int) -> None:
        self.app, self.rounds = app, rounds
        self.local: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, message: Message, context: Context) -> Message:
        reply = self.app(message, context)
        config = message.content.config_records.get(protocol.CONFIG, {})
        if config.get(protocol.SERVER_ROUND) == self.rounds + 1 and reply.has_content():
            arrays = reply.content.array_records[protocol.ARRAYS]
            self.local[int(context.node_config["partition-id"])] = arrays.to_torch_state_dict()
        return reply


def validation(npz: Path, seed: int) -> list[ImageSet]:
    return [
        load_npz_shard(npz, site=i, sites=SITES, partition=PARTITION, seed=seed, size=SIZE).val
        for i in range(SITES)
    ]


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"  # None: that site's images are one class


def rows(matrix: dict, local: dict[int, dict], sets: list[ImageSet]) -> list[list[str]]:
    labels = np.concatenate([s.labels.numpy() for s in sets]).astype(int)
    table = []
    for site, state in sorted(local.items()):
        name = protocol.local_model_name(f"site-{site}")
        model = build_model("small-cnn")
        model.load_state_dict(state)
        scores = np.concatenate([predict(model, s, device=torch.device("cpu"))[0] for s in sets])
        clipped = np.clip(scores, 1e-300, 1 - 1e-16)
        logits = np.log(clipped) - np.log1p(-clipped)
        cells = matrix["cells"][name]
        per_site = " / ".join(_figure(cells[f"site-{i}"]["auc"]) for i in range(SITES))
        table.append(
            [
                name,
                per_site,
                f"{matrix['pooled'][name]['auc']:.4f}",
                f"{rank_auc(labels, scores):.4f}",
                f"{np.mean(np.abs(logits) > 8):.2f}",
                f"{np.max(np.abs(logits)):.1f}",
            ]
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--local-epochs", type=int, default=15)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2)  # every site holds both classes
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    train = TrainSettings(local_epochs=args.local_epochs, learning_rate=args.learning_rate)
    config = RunConfig(
        rounds=1, min_sites=SITES, seed=args.seed, train=train, privacy=PrivacyConfig(enabled=False)
    )
    keep: list[KeepFineTunes] = []

    def wrap(app: Any) -> KeepFineTunes:
        keep.append(KeepFineTunes(app, config.rounds))
        return keep[0]

    npz = args.npz.resolve()
    with flower_identity(), tempfile.TemporaryDirectory() as tmp:
        result = npz_federation(
            npz, Path(tmp), config, sites=SITES, partition=PARTITION, seed=args.seed, wrap=wrap
        )
        matrix = json.loads((result.run_dir.path / "cross_site.json").read_text())
    header = ["model", "AUC per site", "pooled AUC", "direct AUC", "|logit| > 8", "max |logit|"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(matrix, keep[0].local, validation(npz, args.seed)):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
