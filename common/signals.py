"""Stop signals and orphans for a supervising command (``server start``, ``client start``,
``simulate``, ``run``).

Invariants:

- SIGTERM, SIGHUP and SIGINT are noted by :class:`StopSignals` instead of ending the command at
  once (Python's default for SIGTERM and SIGHUP kills only the parent and orphans the whole
  tree); the command then stops its tree (``common/processes.py``) and exits;
- a supervising command is a child subreaper (:func:`become_subreaper`, Linux): a helper whose
  parent dies is re-parented to it, not to init, so ``stop_orphans`` still finds and stops it.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37  # <linux/prctl.h>


def _prctl(option: int, *args: Any) -> bool:
    """Whether Linux ``prctl(option, *args)`` succeeded (False where there is none)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, *args, *[0] * (4 - len(args))) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the new parent of orphaned descendants (Linux ``prctl``).

    False, and nothing changed, where the call is unavailable (then a helper whose parent died
    is re-parented to init, and only the snapshot :func:`stop_process_group` took finds it).
    """
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def is_subreaper() -> bool:
    """Whether orphaned descendants re-parent to this process (see :func:`become_subreaper`)."""
    flag = ctypes.c_int(0)
    return _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag)) and bool(flag.value)


class StopSignals:
    """Context manager: SIGTERM, SIGHUP and SIGINT are noted in :attr:`received` instead of
    ending this process, so it can stop its whole tree first.

    With ``interrupt=True`` the first one also raises KeyboardInterrupt in the main thread (as
    Ctrl-C does), so ``with`` blocks and ``finally`` clauses stop what they started; later ones
    are only noted, so a second signal cannot cut that cleanup short. Outside the main thread
    (where Python allows no handlers) nothing is installed. Handlers only note and raise: a
    wait inside a handler would deadlock on a wait the main thread holds.
    """

    def __init__(self, *, interrupt: bool = False) -> None:
        self.interrupt = interrupt
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in STOP_SIGNALS}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signum
        if self.interrupt:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less once a stop signal came; whether one came."""
        deadline = time.monotonic() + seconds
        while self.received is None and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
        return self.received is not None
