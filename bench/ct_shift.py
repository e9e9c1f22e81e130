"""Does the 3-D classifier hold at another hospital? Leave-one-site-out on synthetic CT.

For each of the three synthetic CT hospitals (each its own scanner: matrix, pixel and slice
spacing, noise, slice order, file layout, nodule prevalence): a DP federation (ε 8, defaults) of
the other two through ``fedscan simulate --data dicom:A,B``, then ``fedscan evaluate`` of its
final model on every series of the held-out hospital. Printed beside the federation's own pooled
validation AUC, which is the in-distribution figure.

    python bench/ct_shift.py [--volumes 60] [--seed 0] [--privacy dp8|no-dp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale import simulate  # noqa: E402 - a sibling benchmark script

from fedscan.common.data.synth_ct import CT_PROFILES, CTConfig, generate_ct_sites  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--privacy", choices=("dp8", "no-dp"), default="dp8")
    args = parser.parse_args()
    rows = [
        "| held-out site (layout) | federation's pooled val AUC | held-out AUC (all its series) |"
        " held-out n (positives) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-ctshift-") as tmp:
        root = Path(tmp)
        sites = generate_ct_sites(root / "sites", CTConfig(3, args.volumes, args.seed))
        for held, profile in enumerate(CT_PROFILES):
            others = ",".join(str(s) for i, s in enumerate(sites) if i != held)
            flags = ["--no-dp"] if args.privacy == "no-dp" else []
            command = ["--data", f"dicom:{others}", "--model", "cnn3d", "--no-cross-site"]
            out = root / f"held-{held}"
            _, _, lines = simulate([*command, "--seed", str(args.seed), *flags], out)
            final = next((out / "runs").glob("*/final.pt"))
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fedscan",
                    "evaluate",
                    "--checkpoint",
                    str(final),
                    "--data",
                    f"dicom:{sites[held]}",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            metrics = json.loads(done.stdout[done.stdout.index("{") :])
            rows.append(
                f"| site-{held} ({profile.layout}) | {lines[-1]['pooled']['auc']:.3f} | "
                f"{metrics['auc']:.3f} | {metrics['n']} ({metrics['positives']}) |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
