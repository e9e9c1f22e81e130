"""Test helper: a command started in its own session, with every process it ever had below it.

A thread notes the command's tree (pid and start time) every 0.1 s while it runs, so a helper that
a dying parent orphans is still known, and the test can tell that all of them are gone. Only this
test's own tree is looked at, never the machine's process list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedscan.common.processes import alive, command_line, descendants

FEDSCAN = [sys.executable, "-m", "fedscan"]
NOTE_EVERY_S = 0.1


def _started(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def _sigkill(pids: list[int]) -> None:
    """SIGKILL each of ``pids``; one that has exited meanwhile is skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_tree(process: subprocess.Popen) -> list[int]:
    """SIGKILL a process and everything it started (Flower's helpers run in sessions of their
    own)."""
    tree = [process.pid, *descendants(process.pid)]
    _sigkill(tree)
    process.wait(timeout=30)
    return tree


class Tree:
    """``fedscan ARGS…`` in a session of its own, output to ``log``; its tree noted as it runs."""

    def __init__(self, args: list[str], *, cwd: Path, log: Path) -> None:
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [*FEDSCAN, *args],
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.seen: dict[int, str] = {}
        self._noting = threading.Thread(target=self._note, daemon=True)
        self._noting.start()

    def _note(self) -> None:
        while self.process.poll() is None:
            for pid in descendants(self.process.pid):
                if pid not in self.seen and (started := _started(pid)) is not None:
                    self.seen[pid] = started
            time.sleep(NOTE_EVERY_S)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> list[int]:
        """Every process this command ever had below it that still runs (itself included)."""
        tree = {**dict(self.seen), self.process.pid: _started(self.process.pid) or ""}
        return [pid for pid, started in tree.items() if alive(pid) and _started(pid) == started]

    def has(self, name: str) -> bool:
        """Whether a process below the command has ``name`` in its command line now."""
        return any(name in command_line(pid) for pid in descendants(self.process.pid))

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, f"exited before {what}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s:\n{self.output()}"
            time.sleep(0.2)

    def stop_with(self, sig: signal.Signals, bound_s: float) -> tuple[int | None, float]:
        """Send ``sig`` to the command alone (as ``kill``, ``timeout`` and systemd do); its exit
        code and how long until its whole tree was gone (at most ``bound_s`` waited)."""
        sent = time.monotonic()
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=bound_s)
        except subprocess.TimeoutExpired:
            return None, bound_s
        self.wait_gone(bound_s - (time.monotonic() - sent))
        return self.process.returncode, time.monotonic() - sent

    def wait_gone(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until the exited command's whole tree is gone."""
        self._noting.join(timeout=5)
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL whatever of the tree is left (a finaliser: also after a failed test)."""
        _sigkill(self.running())
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
