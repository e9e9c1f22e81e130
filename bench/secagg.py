"""Secure aggregation's overhead per round: crypto and protocol steps, and bytes exchanged.

Every site and the aggregator run in this one process (``run_in_process``), one after another,
so the times are CPU seconds of the protocol alone (no network, no training). Per row: n sites,
threshold ceil(2n/3), one site that drops after sharing its keys and before masking (the costly
case: the aggregator rebuilds its key and n - 2 pairwise masks), random updates of ``dimension``
floats clipped to C = 1 and weights up to 5 000. Bytes are message payloads (keys, envelopes,
masked uint64 arrays, shares, ids), without framing. "critical path" adds, step by step, the
slowest site's time and then the aggregator's: the wall time a round gains when sites run in
parallel. Each row is the fastest of ``--repeats`` rounds. The recovered sum is checked against
the plain weighted sum on every round.

    python bench/secagg.py [--sites 3,10,50] [--dimensions 25000,200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from fedscan.common.secagg import SecAggConfig, Step, run_in_process
from fedscan.common.secagg.loopback import AGGREGATOR
from fedscan.common.secagg.quantise import clip

CLIP_BOUND = 1.0
MAX_EXAMPLES = 5_000
FLOAT32_BYTES = 4  # a plain update as fedscan sends it today
MIB = 2**20


def _round(sites: int, dimension: int, seed: int) -> tuple[list[Step], float]:
    """The steps of one round, and its largest error as a share of the stated bound."""
    rng = np.random.default_rng(seed)
    inputs = {
        f"site-{i:02d}": (
            rng.normal(scale=0.01, size=dimension),
            int(rng.integers(1, MAX_EXAMPLES)),
        )
        for i in range(sites)
    }
    config = SecAggConfig(
        "bench", 0, dimension, threshold=math.ceil(2 * sites / 3), clip_bound=CLIP_BOUND
    )
    steps: list[Step] = []
    dropped = sorted(inputs)[sites // 2]
    result = run_in_process(config, inputs, drop_before_masking=[dropped], observe=steps.append)
    kept = [inputs[site] for site in result.survivors]
    plain = sum(weight * clip(update, CLIP_BOUND) for update, weight in kept)
    error = float(np.max(np.abs(result.weighted_sum - plain)))
    assert error < result.error_bound and result.dropped == (dropped,)
    return steps, error / result.error_bound


def _row(sites: int, dimension: int, steps: list[Step]) -> str:
    seconds: dict[str, float] = defaultdict(float)
    sent: dict[str, int] = defaultdict(int)
    slowest: dict[str, float] = defaultdict(float)
    for step in steps:
        seconds[step.party] += step.seconds
        sent[step.party] += step.sent_bytes
        if step.party != AGGREGATOR:
            slowest[step.name] = max(slowest[step.name], step.seconds)
    aggregator = seconds.pop(AGGREGATOR)
    broadcast = sent.pop(AGGREGATOR)
    cells = [
        f"{sites}",
        f"{math.ceil(2 * sites / 3)}",
        f"{dimension:,}",
        f"{np.mean(list(seconds.values())):.3f} / {max(seconds.values()):.3f}",
        f"{aggregator:.3f}",
        f"{sum(slowest.values()) + aggregator:.3f}",
        f"{sum(seconds.values()) + aggregator:.2f}",
        f"{max(sent.values()) / MIB:.3f}",
        f"{broadcast / sites / MIB:.3f}",
        f"{(sum(sent.values()) + broadcast) / MIB:.2f}",
        f"{max(sent.values()) / (FLOAT32_BYTES * dimension):.2f}×",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="3,10,50", help="Comma-separated site counts.")
    parser.add_argument("--dimensions", default="25000,200000", help="Floats per update.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random updates.")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Rounds per row; the fastest is shown."
    )
    args = parser.parse_args(argv)
    print(
        "| sites | threshold | floats | site s (mean / max) | aggregator s | critical path s "
        "| all steps s | MiB sent by a site (max) | MiB received per site (mean) | MiB all "
        "| site upload vs float32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    _round(3, 10, args.seed)  # warm-up: OpenSSL's and NumPy's first calls
    worst = 0.0
    for dimension in (int(d) for d in args.dimensions.split(",")):
        for sites in (int(n) for n in args.sites.split(",")):
            rounds = [_round(sites, dimension, args.seed) for _ in range(args.repeats)]
            steps, _ = min(rounds, key=lambda found: sum(step.seconds for step in found[0]))
            worst = max(worst, *(error_share for _, error_share in rounds))
            print(_row(sites, dimension, steps), flush=True)
    print(f"\nLargest error of the recovered sum: {worst:.2f} of the stated bound (n * C / 2^20).")


if __name__ == "__main__":
    main()
