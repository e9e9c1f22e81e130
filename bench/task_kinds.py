"""Per-class AUC of the multilabel and multiclass tasks beside the binary one, without DP and at
ε = 8 and 3, and what each task costs the sites.

Each cell is one real ``fedscan simulate --task T --seed S`` (3 synthetic hospitals × 300 images,
5 rounds, every other setting at its default), run one after another with a decode cache of its
own (so every run pays the same first-round decoding) and bounded by ``--timeout``. A run that
exits non-zero or times out is a failed cell, never a result. From its metrics.jsonl: the last
line's pooled metrics, and the sites' own time: for every exchange the slowest site's
``site-seconds``, summed over the rounds and the final evaluation (as bench/deployment.py counts
it), divided by the rounds.

    .venv/bin/python bench/task_kinds.py [--seeds 0 1 2] [--tasks multilabel multiclass
        classification] [--privacy no-dp dp8 dp3] [--images-per-site 300] [--resume]

Writes results.json (every run's figures, rewritten as each run ends) and table.md (the tables,
likewise) into --notes, and prints the tables at the end. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fedscan.common.processes import stop_process_group

TASKS = ("multilabel", "multiclass", "classification", "segmentation", "segmentation-3")
# How simulate is asked for each task: segmentation-3 is a label map of three structures.
TASK_FLAGS = {"segmentation-3": ["--task", "segmentation", "--classes", "opacity,heart,nodule"]}
PRIVACY = {"no-dp": ["--no-dp"], "dp8": [], "dp3": ["--epsilon", "3"]}  # dp8: the default ε
HEADERS = {"no-dp": "no DP", "dp8": "ε 8", "dp3": "ε 3"}
BINARY = "classification"
NOTES = Path("/work/notes/task_kinds")


def _bounded(command: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> int | None:
    """Exit code of ``command`` (its output to ``log``), None when it ran past ``timeout_s``;
    whatever it started is stopped either way."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        stop_process_group(process)


def _figures(run_dir: Path) -> dict:
    """The final pooled metrics and the sites' own seconds per round of a completed run."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    own = sum(max(m.get("site-seconds", 0.0) for m in line["train"].values()) for line in lines)
    own += max(m.get("site-seconds", 0.0) for m in lines[-1]["evaluate"].values())
    return {
        "rounds": len(lines),
        "elapsed-s": lines[-1]["elapsed_s"],
        "site-s-per-round": own / len(lines),
        "epsilon": max((e for e in lines[-1]["epsilon"].values() if e is not None), default=None),
        "pooled": lines[-1]["pooled"],
    }


def _tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def run_cell(task: str, privacy: str, seed: int, args: argparse.Namespace) -> dict:
    """One ``fedscan simulate`` and its figures, or the reason it failed."""
    out = args.out / f"{task}-{privacy}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    flags = TASK_FLAGS.get(task, ["--task", task])
    command = [sys.executable, "-m", "fedscan", "simulate", *flags, "--seed", str(seed)]
    command += [*PRIVACY[privacy], "--out", str(out)]
    if args.images_per_site is not None:
        command += ["--images-per-site", str(args.images_per_site)]
    cell: dict = {"task": task, "privacy": privacy, "seed": seed, "command": command[2:]}
    with tempfile.TemporaryDirectory(prefix="fedscan-task-kinds-") as cache:
        env = {**os.environ, "COLUMNS": "200", "FEDSCAN_CACHE_DIR": cache}
        started = time.monotonic()
        code = _bounded(command, out / "simulate.log", args.timeout, env)
        cell["wall-s"] = round(time.monotonic() - started, 1)
    made = sorted(p for p in out.iterdir() if p.is_dir() and p not in before)
    cell["run-dir"] = str(made[-1]) if made else None
    if code != 0:
        cell["failure"] = f"timed out after {args.timeout} s" if code is None else f"exit {code}"
        cell["simulate-log-tail"] = _tail(out / "simulate.log")
        cell["coordinator-log-tail"] = _tail(made[-1] / "coordinator.log") if made else ""
        return cell
    try:
        cell.update(_figures(made[-1]))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # completed, unreadable
        cell["failure"] = f"exit 0 but metrics.jsonl unreadable: {exc!r}"
    return cell


def _spread(values: list[float], completed: int, runs: int) -> str:
    """Mean (min–max) over the seeds that completed; how many, when some did not."""
    if not values:  # no run, every run failed, or the figure is undefined (a class never seen)
        return "—" if not runs else "failed" if not completed else "undefined"
    text = f"{statistics.mean(values):.3f}"
    if len(values) > 1:
        text += f" ({min(values):.3f}–{max(values):.3f})"
    return text + (f" [{len(values)}/{runs} runs]" if len(values) < runs else "")


def _cells(results: list[dict], task: str, privacy: str) -> list[dict]:
    return [c for c in results if c["task"] == task and c["privacy"] == privacy]


def _row(name: str, results: list[dict], task: str, privacies: list[str], pick) -> str:
    """One table row: ``pick(pooled)`` over the seeds, per privacy setting."""
    cells = []
    for privacy in privacies:
        runs = _cells(results, task, privacy)
        values = [pick(c["pooled"]) for c in runs if "pooled" in c]
        cells.append(_spread([v for v in values if v is not None], len(values), len(runs)))
    return f"| {name} | " + " | ".join(cells) + " |"


def _picks(task: str, pooled: dict) -> list[tuple[str, Callable[[dict], float | None]]]:
    """(row label, how to read it from a run's pooled metrics) of ``task``'s table."""
    if task == BINARY:  # one 0/1 label: no per-class figures
        return [("**AUC**", lambda p: p.get("auc")), ("accuracy", lambda p: p.get("accuracy"))]
    if task.startswith("segmentation"):  # per-structure Dice from pooled counts (label map)
        rows: list[tuple[str, Callable[[dict], float | None]]] = [
            (f"{name} Dice", lambda p, n=name: p["labels"][n].get("dice"))
            for name in pooled.get("labels", {})
        ]
        return [*rows, ("**Dice**", lambda p: p.get("dice")), ("IoU", lambda p: p.get("iou"))]
    rows: list[tuple[str, Callable[[dict], float | None]]] = [
        (f"{name} AUC", lambda p, n=name: p["classes"].get(n, {}).get("auc"))
        for name in pooled["classes"]
    ]
    rows += [("**macro AUC**", lambda p: p.get("macro-auc"))]
    rows += [("micro AUC", lambda p: p.get("micro-auc"))]
    if task == "multiclass":
        rows += [("balanced accuracy", lambda p: p.get("balanced-accuracy"))]
        rows += [("top-1 accuracy", lambda p: p.get("accuracy"))]
    return rows


def class_table(results: list[dict], task: str, privacies: list[str]) -> list[str]:
    """Per-class pooled AUC rows, macro AUC and, for multiclass, the accuracies."""
    done = [c for c in results if c["task"] == task and "pooled" in c]
    if not done:
        return [f"### {task}: no completed run", ""]
    seeds = sorted({c["seed"] for c in results if c["task"] == task})
    lines = [f"### {task}: pooled metrics, mean (min–max) over seeds {seeds}", ""]
    lines += ["| | " + " | ".join(HEADERS[p] for p in privacies) + " |"]
    lines += ["|---" * (len(privacies) + 1) + "|"]
    for label, pick in _picks(task, done[0]["pooled"]):
        lines.append(_row(label, results, task, privacies, pick))
    return lines + [""]


def confusion_table(results: list[dict]) -> list[str]:
    """The pooled confusion matrix of multiclass, ε 8, the lowest seed that completed."""
    done = [c for c in _cells(results, "multiclass", "dp8") if "pooled" in c]
    done.sort(key=lambda c: c["seed"])
    if not done or "confusion" not in done[0]["pooled"]:
        return []
    pooled, names = done[0]["pooled"], list(done[0]["pooled"]["classes"])
    lines = [f"### multiclass, ε 8, seed {done[0]['seed']}: pooled confusion (rows true)", ""]
    lines += ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, pooled["confusion"], strict=True):
        lines.append(f"| {name} | " + " | ".join(f"{int(v)}" for v in row) + " |")
    return lines + [""]


def _mean_of(cells: list[dict], key: str) -> float | None:
    values = [c[key] for c in cells if key in c and "pooled" in c]
    return statistics.mean(values) if values else None


def cost_table(results: list[dict], tasks: list[str], privacies: list[str]) -> list[str]:
    """Sites' own seconds per round per task and privacy setting, and the ratio to binary's."""
    lines = ["### Cost: the slowest site's own seconds per round (mean over seeds)", ""]
    lines += ["| task | privacy | site s / round | × binary | wall s per run | runs ok |"]
    lines += ["|---|---|---|---|---|---|"]
    for task in tasks:
        for privacy in privacies:
            cells = _cells(results, task, privacy)
            own, wall = _mean_of(cells, "site-s-per-round"), _mean_of(cells, "wall-s")
            base = _mean_of(_cells(results, BINARY, privacy), "site-s-per-round")
            ratio = f"{own / base:.2f}" if own is not None and base else "—"
            ok = sum("pooled" in c for c in cells)
            lines.append(
                f"| {task} | {HEADERS[privacy]} | {_number(own)} | {ratio} | {_number(wall)} | "
                f"{ok}/{len(cells)} |"
            )
    return lines + [""]


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def runs_table(results: list[dict]) -> list[str]:
    """Every run: wall time, rounds, final ε, macro AUC, or why it failed."""
    lines = ["### Runs", ""]
    lines += ["| task | privacy | seed | wall s | rounds | ε | AUC / Dice | status |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for c in results:
        pooled = c.get("pooled", {})
        auc = pooled.get("macro-auc", pooled.get("auc", pooled.get("dice")))
        eps = "—" if c.get("epsilon") is None else f"{c['epsilon']:.2f}"
        lines.append(
            f"| {c['task']} | {HEADERS[c['privacy']]} | {c['seed']} | {c['wall-s']:.0f} | "
            f"{c.get('rounds', '—')} | {eps} | {_number3(auc)} | {c.get('failure', 'ok')} |"
        )
    return lines + [""]


def _number3(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report(results: list[dict], tasks: list[str], privacies: list[str]) -> str:
    lines = []
    for task in tasks:
        lines += class_table(results, task, privacies)
        lines += confusion_table(results) if task == "multiclass" else []
    lines += cost_table(results, tasks, privacies) + runs_table(results)
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--privacy", nargs="+", choices=list(PRIVACY), default=list(PRIVACY))
    parser.add_argument("--out", type=Path, default=NOTES / "runs", help="run directories")
    parser.add_argument("--notes", type=Path, default=NOTES, help="results.json and table.md")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument(
        "--images-per-site", type=int, default=None, help="passed to simulate (default: its own)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the completed runs in results.json"
    )
    return parser.parse_args()


def _grid(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Seed-major: once one seed's runs are done, every cell of the table has a first figure."""
    return [(t, p, s) for s in args.seeds for t in args.tasks for p in args.privacy]


def _report(results: list[dict], grid: list[tuple[str, str, int]], args: argparse.Namespace) -> str:
    """The tables over the cells of ``grid``, in its order."""
    place = {cell: index for index, cell in enumerate(grid)}
    within = [c for c in results if (c["task"], c["privacy"], c["seed"]) in place]
    within.sort(key=lambda c: place[(c["task"], c["privacy"], c["seed"])])
    return report(within, args.tasks, args.privacy)


def main() -> None:
    args = _arguments()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the running simulate is stopped
    args.notes.mkdir(parents=True, exist_ok=True)
    saved, grid = args.notes / "results.json", _grid(args)
    kept = json.loads(saved.read_text()) if args.resume and saved.exists() else []
    results = [c for c in kept if "pooled" in c]  # all kept in the file; the tables show the grid
    done = {(c["task"], c["privacy"], c["seed"]) for c in results}
    for task, privacy, seed in grid:
        if (task, privacy, seed) in done:
            continue
        print(f"{task} {HEADERS[privacy]} seed {seed} ...", end=" ", flush=True)
        cell = run_cell(task, privacy, seed, args)
        print(cell.get("failure", "ok"), f"{cell['wall-s']:.0f} s", flush=True)
        results.append(cell)
        saved.write_text(json.dumps(results, indent=1))
        (args.notes / "table.md").write_text(_report(results, grid, args))
    (args.notes / "table.md").write_text(_report(results, grid, args))
    print("\n" + _report(results, grid, args))


if __name__ == "__main__":
    main()
