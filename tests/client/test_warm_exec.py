"""The site's warm executor: each ClientApp task in a fresh fork with the stack already imported,
nothing carried from one task to the next; the SuperNode launcher starts it only in process
isolation. (Real federations through it: tests/test_deployment*.py, tests/test_signals.py.)"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import ExecutionSpec

from fedscan.client import warm_exec
from fedscan.client.site_config import load_site_config
from fedscan.client.supernode import supernode_command
from fedscan.client.supernode_launcher import start_warm_exec

SPEC = ExecutionSpec(
    task_type=TaskType.CLIENT_APP,
    runtime_api_address="127.0.0.1:1",
    token="t",
    insecure=True,
    root_certificates_path=None,
    runtime_dependency_install=False,
    parent_pid=None,
    suppress_output=False,
    task_id=1,
)
TASK_STATE: list[int] = []  # what a task leaves in its process's memory


def _wait_reaped(executor: warm_exec.ForkExecutor, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while executor.children:
        assert time.monotonic() < deadline, f"tasks still running: {executor.children}"
        executor.reconcile()
        time.sleep(0.05)


def test_each_task_runs_in_a_fresh_fork_that_has_the_stack_and_no_earlier_task_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flwr.supernode.runtime.run_clientapp as flower

    def task(**kwargs: object) -> None:  # stands in for Flower's run_clientapp, in the child
        seen = {
            "pid": os.getpid(),
            "token": kwargs["token"],
            "imported": "torch" in sys.modules and "fedscan.client.app" in sys.modules,
            "earlier": list(TASK_STATE),
        }
        TASK_STATE.append(os.getpid())
        (tmp_path / f"{kwargs['token']}.json").write_text(json.dumps(seen))
        raise SystemExit(0)  # as Flower's flwr_exit ends every task

    warm_exec.import_stack(("fedscan.client.app",))
    monkeypatch.setattr(flower, "run_clientapp", task)
    executor = warm_exec.ForkExecutor()
    for token in ("first", "second"):
        assert executor.launch(replace(SPEC, token=token)).status == "accepted"
        _wait_reaped(executor)
    first, second = (json.loads((tmp_path / f"{t}.json").read_text()) for t in ("first", "second"))
    assert first["imported"] and second["imported"]
    assert len({first["pid"], second["pid"], os.getpid()}) == 3
    assert first["earlier"] == second["earlier"] == [] and TASK_STATE == []


def test_the_loop_uses_the_fork_executor_for_client_apps_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = warm_exec.use_fork_executor()
    assert loop is not None and isinstance(loop.get_executor("subprocess"), warm_exec.ForkExecutor)
    launched: list[object] = []
    executor = warm_exec.ForkExecutor()
    monkeypatch.setattr(executor._fallback, "launch", launched.append)
    executor.launch(replace(SPEC, task_type=TaskType.SERVER_APP))
    assert len(launched) == 1 and not executor.children


def _site_toml(tmp_path: Path, warm: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nname = "s"\nstate-dir = "state"\n{warm}\n[data]\ndir = "data"\n\n'
        "[privacy]\nmax-epsilon-per-run = 8.0\nmax-epsilon-lifetime = 40.0\n\n"
        '[coordinator]\naddress = "127.0.0.1:9092"\ninsecure = true\n'
    )
    return path


@pytest.mark.parametrize(("warm", "isolation"), [("", True), ("warm-clientapp = false", False)])
def test_the_supernode_runs_in_process_isolation_unless_the_site_turns_it_off(
    tmp_path: Path, warm: str, isolation: bool
) -> None:
    path = _site_toml(tmp_path, warm)
    command = supernode_command(load_site_config(path), path)
    assert ("--isolation" in command) is isolation
    if isolation:
        assert command[command.index("--isolation") + 1] == "process"


def test_the_launcher_starts_the_executor_only_in_process_isolation() -> None:
    assert start_warm_exec(["--host", "127.0.0.1", "--port", "9094"]) is None


def test_a_forked_task_retries_an_object_not_there_yet_after_0_05_s_not_1_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.supernode.runtime import run_clientapp as task

    flowers = task.pull_and_inflate_object_from_tree
    monkeypatch.setattr(task, "pull_and_inflate_object_from_tree", flowers)
    assert warm_exec.sooner_object_pull_retries() and warm_exec.sooner_object_pull_retries()
    sooner = task.pull_and_inflate_object_from_tree
    assert sooner.func is flowers and sooner.keywords == {"initial_backoff": 0.05}  # once
