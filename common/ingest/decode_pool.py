"""Decode files in worker processes with a per-file time limit.

A worker that exceeds the limit is killed and replaced (``DECODE_TIMEOUT``);
one that dies is replaced too (``DECODE_FAILED``). Workers start on the first
file that needs decoding, so a fully cached site never starts one.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.common import defaults
from fedscan.common.errors import DataError, Rejected
from fedscan.common.ingest.decode_worker import read_message, write_message
from fedscan.common.ingest.decoded import Decoded
from fedscan.common.ingest.dicom import DecodeOptions, decode_file
from fedscan.common.ingest.rejections import Reason

log = logging.getLogger(__name__)

Job = tuple[Any, Path]  # (the caller's key, the file): the key comes back with the outcome
Outcome = tuple[Any, Decoded | Rejected]
_STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PoolSettings:
    """``workers`` 0 decodes in this process (no time limit: for debugging only)."""

    workers: int = defaults.DECODE_WORKERS
    timeout_s: float = defaults.DECODE_TIMEOUT_S
    memory_limit_bytes: int = 6 * 1024**3

    def __post_init__(self) -> None:
        if self.workers < 0 or self.timeout_s <= 0 or self.memory_limit_bytes < 0:
            raise ValueError("Decode pool: workers ≥ 0, timeout_s > 0 and memory_limit_bytes ≥ 0.")


class _Worker:
    def __init__(self, memory_limit: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedscan.common.ingest.decode_worker", str(memory_limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both piped
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.job: Job = ("", Path())
        self.started = 0.0
        self.dead = False
        # Start-up (imports) must not count against the first file's time limit.
        ready, _, _ = select.select([self.stdout], [], [], _STARTUP_TIMEOUT_S)
        if not ready or read_message(self.stdout.read) != "ready":
            self.kill()
            raise DataError(
                "A decoder process failed to start; check that fedscan imports in this "
                "environment (python -m fedscan --version)."
            )

    def send(self, job: Job, options: DecodeOptions) -> None:
        self.job, self.started = job, time.monotonic()
        write_message(self.stdin, (str(job[1]), options))

    def receive(self) -> Decoded | Rejected:
        reply = read_message(self.stdout.read)
        if reply is None:
            self.dead = True
            return Rejected(Reason.DECODE_FAILED, "The decoder crashed on this file.")
        if reply[0] == "ok":
            return Decoded(reply[1], reply[2])
        return Rejected(Reason(reply[1]), reply[2])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.stdin.close()
        self.stdout.close()


class DecodePool:
    """Context manager; :meth:`decode` yields ``(key, Decoded | Rejected)`` in completion order."""

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings()
        self._idle: list[_Worker] = []

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().kill()

    def decode(self, jobs: Iterable[Job], options: DecodeOptions) -> Iterator[Outcome]:
        if self.settings.workers == 0:
            yield from ((key, _decode_here(path, options)) for key, path in jobs)
            return
        pending: deque[Job] = deque(jobs)
        busy: list[_Worker] = []
        try:
            while pending or busy:
                self._dispatch(pending, busy, options)
                yield from self._collect(busy)
        finally:
            for worker in busy:  # the caller stopped early: these are mid-file
                worker.kill()

    def _dispatch(self, pending: deque[Job], busy: list[_Worker], options: DecodeOptions) -> None:
        while pending and len(busy) < self.settings.workers:
            worker = self._idle.pop() if self._idle else _Worker(self.settings.memory_limit_bytes)
            try:
                worker.send(pending[0], options)
            except OSError:  # the worker died while idle: replace it and retry the job
                worker.kill()
                continue
            pending.popleft()
            busy.append(worker)

    def _collect(self, busy: list[_Worker]) -> Iterator[Outcome]:
        deadline = min(worker.started for worker in busy) + self.settings.timeout_s
        streams = {worker.stdout: worker for worker in busy}
        ready, _, _ = select.select(list(streams), [], [], max(0.0, deadline - time.monotonic()))
        for stream in ready:
            worker = streams[stream]
            outcome = worker.receive()
            busy.remove(worker)
            if worker.dead:
                worker.kill()
            else:
                self._idle.append(worker)
            yield worker.job[0], outcome
        now = time.monotonic()
        for worker in [w for w in busy if now - w.started >= self.settings.timeout_s]:
            busy.remove(worker)
            worker.kill()
            log.warning(
                "A file exceeded the %.0f s decode limit; its decoder was stopped",
                self.settings.timeout_s,
            )
            yield (
                worker.job[0],
                Rejected(
                    Reason.DECODE_TIMEOUT,
                    f"Decoding took longer than {self.settings.timeout_s:g} s.",
                ),
            )


def _decode_here(path: Path, options: DecodeOptions) -> Decoded | Rejected:
    try:
        return decode_file(path, options)
    except Rejected as rejected:
        return rejected
