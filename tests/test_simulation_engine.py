"""Real multi-process federations on Flower's Simulation Engine (Ray workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEDSCAN = [sys.executable, "-m", "fedscan"]


TAG_ENV = "FEDSCAN_TEST_TREE"  # every process a test starts inherits it, Ray's and Flower's too


def _env(tmp_path: Path) -> dict[str, str]:
    """The environment of this test's fedscan processes, tagged with the test's own folder."""
    return {
        **os.environ,
        "COLUMNS": "200",
        "FEDSCAN_CACHE_DIR": str(tmp_path / "cache"),
        TAG_ENV: str(tmp_path),
    }


def _simulate(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FEDSCAN, "simulate", "--out", str(tmp_path / "runs"), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _leftover_processes(tmp_path: Path) -> list[int]:
    """Live processes this test started (tagged through their environment), wherever they were
    re-parented: other federations on the machine do not count."""
    tag = f"{TAG_ENV}={tmp_path}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # Zombies have exited already; the sandbox's init reaps them late.
        if tag in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _only_run(tmp_path: Path) -> Path:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir


def test_small_dp_federation_over_site_folders_runs_on_the_simulation_engine(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    folders = ",".join(str(p) for p in synthetic_sites[:2])
    result = _simulate(
        tmp_path,
        "--data",
        f"dicom:{folders}",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--delta",
        "1e-4",
        "--epsilon",
        "6",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Final" in result.stdout and "Traceback" not in result.stdout + result.stderr
    run_dir = _only_run(tmp_path)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    assert sorted(lines[-1]["epsilon"]) == ["site-0", "site-1"]  # the folders' names
    assert (
        len(list((tmp_path / "cache").rglob("*.entry"))) == 80
    )  # each site decoded once, into the cache
    assert all(0 < eps <= 6 * 1.001 for eps in lines[-1]["epsilon"].values())
    assert (run_dir / "final.pt").is_file() and (run_dir / "final.json").is_file()
    assert not _leftover_processes(tmp_path)  # SuperLink, SuperExec and Ray all stopped
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert (run_dir / "coordinator.log").stat().st_size > 0


@pytest.mark.slow  # CI time (≈ 23 s): the in-process failure states are tested in the suite
def test_a_failed_run_exits_1_with_the_reason_and_leaves_nothing_running(tmp_path: Path) -> None:
    result = _simulate(
        tmp_path,
        "--sites",
        "2",
        "--rounds",
        "1",
        "--images-per-site",
        "30",
        "--local-epochs",
        "1",
        "--delta",
        "0.1",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "delta-too-large" in result.stdout and "federation failed" in result.stderr
    assert json.loads((_only_run(tmp_path) / "status.json").read_text())["state"] == "failed"
    assert not _leftover_processes(tmp_path)


@pytest.mark.slow
def test_default_demo_reaches_the_auc_target_within_budget(tmp_path: Path) -> None:
    result = _simulate(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    final = [
        json.loads(x) for x in (_only_run(tmp_path) / "metrics.jsonl").read_text().splitlines()
    ][-1]
    assert final["aggregated"]["auc"] >= 0.85
    assert all(eps <= 8.0 * 1.001 for eps in final["epsilon"].values())


@pytest.mark.slow  # resume and segmentation also run in CI in-process and on namespaces
def test_a_simulation_killed_mid_run_resumes_from_its_checkpoint(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    from fedscan.common.processes import descendants
    from tests.test_deployment_resilience import wait_until

    folders = ",".join(str(p) for p in synthetic_sites[:2])
    args = [
        "--data",
        f"dicom:{folders}",
        "--rounds",
        "3",
        "--local-epochs",
        "1",
        "--delta",
        "1e-4",
        "--no-cross-site",
    ]
    runner = subprocess.Popen(
        [*FEDSCAN, "simulate", "--out", str(tmp_path / "runs"), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "runs"
    wait_until(lambda: any(checkpoints.glob("*/checkpoints/round-00001.ckpt")), 300, "round 1")
    for pid in [runner.pid, *descendants(runner.pid)]:  # the CLI, its SuperLink, the ServerApp, Ray
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    runner.wait(timeout=30)
    run_dir = _only_run(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # no handler ran
    result = _simulate(tmp_path, "--resume", run_dir.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Resuming run" in result.stdout
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3]
    assert all(0 < eps <= 8 * 1.001 for eps in lines[-1]["epsilon"].values())
    again = _simulate(tmp_path, "--resume", run_dir.name)
    assert again.returncode == 2 and "already completed" in again.stderr
    wait_until(lambda: not _leftover_processes(tmp_path), 30, "the killed run's processes to go")


@pytest.mark.slow  # a DP segmentation federation also runs in CI in-process
def test_a_dp_segmentation_federation_runs_on_the_simulation_engine_and_evaluates(
    tmp_path: Path, synthetic_sites: list[Path]
) -> None:
    folders = ",".join(str(p) for p in synthetic_sites[:2])
    result = _simulate(
        tmp_path,
        "--task",
        "segmentation",
        "--data",
        f"dicom:{folders}",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--batch-size",
        "16",
        "--delta",
        "1e-4",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model unet" in result.stdout and "pooled validation Dice" in result.stdout
    run_dir = _only_run(tmp_path)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    pooled = lines[-1]["pooled"]
    assert pooled["dice"] == 2 * pooled["intersection"] / (pooled["predicted"] + pooled["truth"])
    assert all(0 < eps <= 8 * 1.001 for eps in lines[-1]["epsilon"].values())
    assert not (run_dir / "cross_site.json").exists()  # segmentation runs skip the AUC matrix
    assert "Dice per round" in (run_dir / "report.html").read_text()
    evaluated = subprocess.run(
        [
            *FEDSCAN,
            "evaluate",
            "--checkpoint",
            str(run_dir / "final.pt"),
            "--data",
            f"dicom:{synthetic_sites[2]}",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FEDSCAN_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert (
        metrics["task"] == "segmentation"
        and metrics["n"] == 40
        and {"dice", "iou", "hd95"} <= set(metrics)
    )
    assert not _leftover_processes(tmp_path)


@pytest.mark.slow
def test_default_segmentation_demo_reaches_the_dice_target(tmp_path: Path) -> None:
    """Acceptance: `fedscan simulate --task segmentation` on the default synthetic sites, DP off."""
    result = _simulate(tmp_path, "--task", "segmentation", "--no-dp")
    assert result.returncode == 0, result.stdout + result.stderr
    final = [
        json.loads(x) for x in (_only_run(tmp_path) / "metrics.jsonl").read_text().splitlines()
    ][-1]
    assert final["pooled"]["dice"] >= 0.80
