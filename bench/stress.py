"""Stress: many site processes and many operator calls against one coordinator.

Starts a loopback coordinator (`fedscan server start`, TLS + site authentication), N site
processes (`fedscan client start`), launches a run with cross-site validation (the phase where
`database is locked` was seen: every site fine-tunes and evaluates at once) and, while it runs,
hammers the control API with `fedscan server sites list` and `fedscan status` (bounded in count
and time). Then counts `database is locked` and `StatusCode.INTERNAL` in every log, and the sites
that were lost: missing from the last round, the fine-tune or the cross-site matrix.

    python bench/stress.py [--sites 10] [--rounds 2] [--images 24] [--stock-sqlite]

`--stock-sqlite` keeps Flower's own 5 s SQLite lock wait (fedscan raises it; see
server/superlink_launcher.py) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployment import FEDSCAN, _join_sites, _prepare, _start  # noqa: E402

from fedscan.common.processes import free_port, stop_process_group  # noqa: E402
from fedscan.server.superlink_launcher import STOCK_SQLITE_ENV  # noqa: E402

MAX_CALLS, MAX_CALL_S = 400, 3600.0  # the control-call loop's bounds


def _hammer(root: Path, done: threading.Event, durations: list[float]) -> None:
    """Operator calls, one after another, until the run ends (bounded)."""
    commands = (["server", "sites", "list"], ["status"])
    deadline = time.monotonic() + MAX_CALL_S
    while not done.is_set() and len(durations) < MAX_CALLS and time.monotonic() < deadline:
        started = time.monotonic()
        subprocess.run(
            [*FEDSCAN, *commands[len(durations) % 2], "--config", "coordinator.toml"],
            cwd=root,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        durations.append(time.monotonic() - started)


def _lost(run_dir: Path, names: list[str]) -> dict[str, list[str]]:
    """Sites missing from each phase the run needed them in."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    matrix = json.loads((run_dir / "cross_site.json").read_text())
    phases = {
        "last round's training": set(lines[-1]["train"]),
        "final evaluation": set(lines[-1]["evaluate"]),
        "cross-site fine-tune": {
            model.removeprefix("local:") for model in matrix.get("models", [])
        },
        "cross-site evaluation": set(matrix.get("sites", [])),
    }
    return {phase: sorted(set(names) - seen) for phase, seen in phases.items()}


def _count(root: Path, text: str) -> int:
    return sum(log.read_text(errors="replace").count(text) for log in root.rglob("*.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--stock-sqlite", action="store_true")
    parser.add_argument("--keep-logs", type=Path, help="Copy every log here before cleaning up.")
    args = parser.parse_args()
    if args.stock_sqlite:
        os.environ[STOCK_SQLITE_ENV] = "1"
    with tempfile.TemporaryDirectory(prefix="fedscan-stress-") as tmp:
        root, fleet, control = Path(tmp), free_port(), free_port()
        names = _prepare(root, args.sites, args.images, fleet, control)
        processes = [
            _start(["server", "start", "--config", "coordinator.toml"], root, "coordinator.log")
        ]
        durations: list[float] = []
        done = threading.Event()
        try:
            _join_sites(root, names, control, processes)
            (root / "run.toml").write_text(
                '[run]\ncoordinator-config = "coordinator.toml"\n'
                f"rounds = {args.rounds}\nmin-sites = {args.sites}\nlocal-epochs = 1\n"
                "batch-size = 8\ndelta = 1e-4\ncross-site = true\njoin-timeout-s = 300\n"
                "round-timeout-s = 600\n"
            )
            hammer = threading.Thread(target=_hammer, args=(root, done, durations))
            hammer.start()
            started = time.monotonic()
            run = subprocess.run(
                [*FEDSCAN, "run", "--config", "run.toml"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            wall = time.monotonic() - started
            done.set()
            hammer.join(timeout=180)
            run_dir = next((root / "coordinator" / "runs").iterdir(), None)
            if run_dir is None:
                raise SystemExit(f"no run was submitted:\n{run.stdout}\n{run.stderr}")
            status = json.loads((run_dir / "status.json").read_text())
            lost = _lost(run_dir, names) if status.get("state", "").startswith("completed") else {}
            locked, internal = _count(root, "database is locked"), _count(root, "INTERNAL")
        finally:
            done.set()
            for process in reversed(processes):
                stop_process_group(process)
            if args.keep_logs is not None:
                shutil.copytree(root, args.keep_logs, ignore=shutil.ignore_patterns("sites"))
    print(
        f"\n{args.sites} site processes × {args.images} synthetic images, {args.rounds} rounds + "
        f"cross-site, DP ε=8, loopback TLS, SQLite lock wait: "
        f"{'Flower 5 s' if args.stock_sqlite else 'fedscan 120 s'}\n"
    )
    print(
        "| run exit | state | wall s | control calls | slowest call s | `database is locked` "
        "| `INTERNAL` | sites lost |"
    )
    print("|---|---|---|---|---|---|---|---|")
    lost_text = "; ".join(f"{k}: {', '.join(v)}" for k, v in lost.items() if v) or "none"
    print(
        f"| {run.returncode} | {status.get('state')} | {wall:.0f} | {len(durations)} | "
        f"{max(durations, default=0):.1f} | {locked} | {internal} | {lost_text} |"
    )


if __name__ == "__main__":
    main()
