"""Robust aggregation against Byzantine sites: 10 sites, 2 of them send sign-flipped ×10 updates.

In-process federations (``fedscan.server.inprocess``) on PneumoniaMNIST, 10 sites
partitioned IID, small-cnn, 1 local epoch, DP ε = 8. Every row uses the same seed and data; the
update gate's norm check is off (``norm-gate = 0``) except in the last row, so the
table shows what each aggregation rule does by itself. Prints pooled validation AUC.

    python bench/byzantine.py [--npz ../shared/data/pneumoniamnist_trainval.npz] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message
from npz_federation import npz_federation  # bench/ is on sys.path when a bench script runs

from fedscan.common.config import RunConfig
from fedscan.common.privacy import PrivacyConfig
from fedscan.common.training_settings import TrainSettings
from fedscan.server.inprocess import flower_identity

SITES, BYZANTINE = 10, (100, 101)  # node ids of the two attackers


@dataclass
class SignFlip:
    """Byzantine sites return global − scale × (their honest update − global)."""

    app: object
    attackers: tuple[int, ...]
    scale: float = 10.0

    def __call__(self, msg: Message, context: Context) -> Message:
        reply = self.app(msg, context)
        if (
            context.node_id in self.attackers
            and msg.metadata.message_type == "train"
            and not reply.has_error()
        ):
            sent = msg.content["arrays"].to_torch_state_dict()
            honest = reply.content["arrays"].to_torch_state_dict()
            reply.content["arrays"] = ArrayRecord(
                {
                    k: sent[k] - self.scale * (v - sent[k]) if v.is_floating_point() else v
                    for k, v in honest.items()
                }
            )
        return reply


def _federation(
    npz: Path, root: Path, strategy: str, *, attack: bool, norm_gate: float, rounds: int
) -> float:
    config = RunConfig(
        rounds=rounds,
        min_sites=SITES - len(BYZANTINE),
        strategy=strategy,
        norm_gate=norm_gate,
        byzantine_sites=len(BYZANTINE),
        cross_site=False,
        seed=1,
        train=TrainSettings(local_epochs=1, batch_size=32, learning_rate=0.05, augment=False),
        privacy=PrivacyConfig(epsilon=8.0, delta=1e-4),
    )
    result = npz_federation(
        npz,
        root,
        config,
        sites=SITES,
        partition="iid",
        wrap=(lambda app: SignFlip(app, BYZANTINE)) if attack else None,
    )
    return float(result.history[-1]["pooled"]["auc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--npz", type=Path, default=Path("../shared/data/pneumoniamnist_trainval.npz")
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)  # a table, not Flower's per-round log
    rows = [
        ("fedavg", False, 0.0),
        ("fedavg", True, 0.0),
        ("median", False, 0.0),
        ("median", True, 0.0),
        ("trimmed-mean", False, 0.0),
        ("trimmed-mean", True, 0.0),
        ("krum", True, 0.0),
        ("fedavg", True, 5.0),
    ]
    print(
        f"\n{SITES} sites (IID PneumoniaMNIST), 2 send sign-flipped ×10 updates; small-cnn, DP "
        "ε=8, "
        f"{args.rounds} rounds; pooled validation AUC\n"
    )
    print("| aggregation | attack | update gate | pooled AUC | wall s |")
    print("|---|---|---|---|---|")
    with flower_identity(), tempfile.TemporaryDirectory(prefix="fedscan-byz-") as tmp:
        for index, (strategy, attack, gate) in enumerate(rows):
            started = time.monotonic()
            auc = _federation(
                args.npz.resolve(),
                Path(tmp) / str(index),
                strategy,
                attack=attack,
                norm_gate=gate,
                rounds=args.rounds,
            )
            print(
                f"| {strategy} | {'2 of 10 sign-flipped ×10' if attack else 'none'} | "
                f"{'norm ≤ 5× median' if gate else 'off'} | {auc:.3f} | "
                f"{time.monotonic() - started:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
