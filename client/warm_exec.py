"""``python -m fedscan.client.warm_exec --runtime-api-address ADDR --parent-pid PID``: the site's
ClientApp executor, with fedscan's stack imported once.

Flower 1.39's SuperExec starts a fresh ``flwr-clientapp`` process for every message, which
imports PyTorch, MONAI and Opacus again (≈ 3–4 s of a 2-core site's round, most of the
per-message start-up that ``bench/deployment.py`` measures). This process is the SuperExec of a
SuperNode started with ``--isolation process``: it runs Flower's own task loop, imports the
site's stack once, and runs each ClientApp task in a ``fork`` of itself, which calls Flower's
unchanged ``run_clientapp`` with the modules already loaded.

Invariants:
- Nothing outlives a task: each task is a fresh child that exits when it ends, so no run's
  model, data, ledger handle or RNG state is left for the next message (or the next run).
- The parent never runs a PyTorch op or starts a thread pool before forking (only imports),
  so a child starts with no half-copied locks; the Runtime API's HTTP client is the child's own.
- If this Flower's task loop is not where fedscan expects it, the stock ``flower-superexec``
  runs instead (a warning says so): slower, never broken.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# What a train or evaluate handler imports (measured: `import monai` alone is ≈ 2 s on a 2-core
# host, the whole list ≈ 3.5 s; a forked child then answers a train message without importing).
WARM_MODULES = (
    "fedscan.client.app",
    "fedscan.client.releases",
    "fedscan.common.models.training",
    "fedscan.common.models.classical",
    "fedscan.common.models.feature_stats",
    "fedscan.common.data.augment",
    "fedscan.common.data.batch_augment",
    "fedscan.common.data.site",
    "fedscan.common.ingest.scan",
    "fedscan.common.ingest.packed",
    "fedscan.common.ingest.series.slices",
    "monai",
    "opacus",
    # The first optimizer step imports it (torch._compile's lazy import): ≈ 0.9 s measured, which
    # was a tenth of a plain round's site-seconds at 300 images.
    "torch._dynamo",
)


def import_stack(modules: tuple[str, ...] = WARM_MODULES) -> float:
    """Import what a handler needs; the seconds it took."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - started


class ForkExecutor:
    """Flower's executor interface: ClientApp tasks run in a fork of this process, any other task
    type as Flower's own subprocess."""

    def __init__(self) -> None:
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self._fallback = SubprocessExecutor()
        self.children: set[int] = set()

    def get_eligible_capacity(self, supported_task_types: set[Any], **kwargs: Any) -> Any:
        return self._fallback.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, task_type: Any = None, **kwargs: Any) -> None:
        """Forks have no capacity gate."""

    def launch(self, spec: Any) -> Any:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self._fallback.launch(spec)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: run the task, then leave without the parent's exit handlers
            os._exit(_run_task(spec))
        self.children.add(pid)
        log.debug("ClientApp task %s runs in process %s", spec.task_id, pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap the children that ended (no zombies between tasks)."""
        for pid in list(self.children):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        """Children monitor this process and end with it; nothing to release here."""


def _run_task(spec: Any) -> int:
    """One ClientApp task with Flower's ``run_clientapp``; its exit status."""
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    certificates = (
        None
        if spec.root_certificates_path is None
        else Path(spec.root_certificates_path).read_bytes()
    )
    code = 1
    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=certificates,
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as ended:  # Flower's flwr_exit ends every task this way
        code = ended.code if isinstance(ended.code, int) else 0 if ended.code is None else 1
    except BaseException:  # noqa: BLE001 - the child must always reach os._exit
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


# Flower's SuperNode starts a task once the message is listed, while its objects may still be
# arriving from the coordinator. The ClientApp's pull of an object not there yet then waits 1 s,
# then 2 s (flwr.supercore.constant.PULL_INITIAL_BACKOFF): traced stalls of 0.9-1.0 s and 2.9 s
# in 4 of 30 messages (bench/deployment.py, 2-core host). The first retry here comes after 0.05 s;
# the backoff still doubles to Flower's cap, so a slow link is waited for as long as before.
FIRST_PULL_RETRY_S = 0.05


def sooner_object_pull_retries() -> bool:
    """A forked task's object pulls retry first after :data:`FIRST_PULL_RETRY_S`; False (Flower's
    backoff) if this Flower's task runner does not pull where fedscan expects."""
    try:
        from flwr.supernode.runtime import run_clientapp as task
    except ImportError:
        return False
    pull = getattr(task, "pull_and_inflate_object_from_tree", None)
    if isinstance(pull, functools.partial):  # done already
        return True
    if not callable(pull):
        return False
    sooner = functools.partial(pull, initial_backoff=FIRST_PULL_RETRY_S)
    setattr(task, "pull_and_inflate_object_from_tree", sooner)  # noqa: B010 - Flower's global
    return True


def use_fork_executor() -> ModuleType | None:
    """Flower's SuperExec loop module with its executor factory replaced by
    :class:`ForkExecutor`; None if this Flower's layout differs."""
    try:
        from flwr.supercore.superexec import run_superexec as loop
    except ImportError:
        return None
    if not callable(getattr(loop, "get_executor", None)) or not callable(
        getattr(loop, "run_superexec", None)
    ):
        return None
    setattr(loop, "get_executor", lambda *args, **kwargs: ForkExecutor())  # noqa: B010
    return loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    loop = use_fork_executor()
    if loop is None:
        print(
            "fedscan: this Flower's SuperExec is not where fedscan expects it; each message "
            "starts a fresh ClientApp process.",
            file=sys.stderr,
            flush=True,
        )
        command = ["flower-superexec", "--insecure", "--runtime-api-address"]
        command.append(args.runtime_api_address)
        if args.parent_pid is not None:
            command += ["--parent-pid", str(args.parent_pid)]
        os.execvp(command[0], command)
    seconds = import_stack()
    if not sooner_object_pull_retries():
        print(
            "fedscan: this Flower's task runner is not where fedscan expects; a ClientApp's "
            "object pulls keep Flower's 1 s first retry.",
            file=sys.stderr,
            flush=True,
        )
    print(f"fedscan: ClientApp stack imported once ({seconds:.1f} s).", file=sys.stderr, flush=True)
    loop.run_superexec(
        runtime_api_address=args.runtime_api_address, insecure=True, parent_pid=args.parent_pid
    )


if __name__ == "__main__":
    main()
