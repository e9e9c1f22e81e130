"""``python -m fedscan.client.supernode_launcher ARGS…``: Flower's SuperNode, polling more often.

Flower 1.39's SuperNode loop sleeps 3 s whenever the coordinator has no
message for it, and 0.5 s between checks for the ClientApp's reply; both are
hard-coded, and they are most of a round's latency on a fast network. This
launcher runs the unchanged ``flower-supernode`` entry point after capping the
sleeps of that one loop module: the polls of the coordinator at
``FEDSCAN_SUPERNODE_POLL_S`` seconds (site.toml ``[coordinator] poll-interval-s``),
the checks for a reply at 0.05 s. If a later Flower moves the loop, the cap
is skipped with a warning and the SuperNode runs as stock. :class:`Link` reads
what the SuperNode's output says of its connection.

It also never leaves a SuperNode alive that does nothing. Flower 1.39's
``start_client_internal`` logs and swallows an error that ends its connection
(e.g. ``StatusCode.INTERNAL`` from the SuperLink, or retries given up) and
returns, while the non-daemon Runtime API thread keeps the process alive for
ever; and an error in a background thread (the heartbeat) ends that thread
only. Here either case ends the process with :data:`LOST_EXIT`, so
``fedscan client start`` restarts it (:mod:`fedscan.client.supernode`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType

log = logging.getLogger(__name__)
POLL_ENV = (
    "FEDSCAN_SUPERNODE_POLL_S"  # set by `fedscan client start` from site.toml's poll-interval-s
)
LOST_EXIT = 75  # EX_TEMPFAIL: the connection ended or a part of the SuperNode died; start again
LOST_MARKER = "fedscan: SuperNode stopped working"  # the line `fedscan client start` reports
_FLOWER_EXIT = re.compile(r"Exit Code: (\d+)")
# What Flower 1.39 logs (flwr/supernode/start_client_internal.py, flwr/supercore/retry/):
_CONNECTED = re.compile(r"SuperNode ID: (\d+)")
# A retried call that got through, or a message moved: either proves the connection is back.
_RECONNECTED = ("Connection successful after", "Received successfully", "Sent successfully")
_RETRYING = "Connection attempt failed"


# Flower 1.39's loop sleeps 3 s after asking the coordinator in vain (a remote call) and 0.5 s
# between looks at its own in-memory store for the ClientApp's reply (a local read). The local
# looks are capped far lower: a reply waited 0.1-0.5 s for the next look, on every exchange
# (bench/deployment.py traces on a 2-core host).
LOCAL_WAIT_S = 0.5  # Flower's sleep between local looks
LOCAL_LOOK_S = 0.05  # fedscan's


class CappedSleep:
    """The ``time`` module as one module sees it: a remote poll's sleep capped at ``cap_s``,
    a local look's at :data:`LOCAL_LOOK_S`."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        cap = min(self.cap_s, LOCAL_LOOK_S) if seconds <= LOCAL_WAIT_S else self.cap_s
        time.sleep(min(seconds, cap))


def cap_supernode_polling(cap_s: float) -> bool:
    """Cap the SuperNode loop's sleeps; False (and stock behaviour) if Flower's layout changed."""
    node_loop: ModuleType | None
    try:
        from flwr.supernode import start_client_internal as node_loop
    except ImportError:
        node_loop = None
    if node_loop is None or getattr(node_loop, "time", None) is not time:
        log.warning(
            "This Flower's SuperNode loop is not where fedscan expects it; polling stays at "
            "Flower's pace."
        )
        return False
    setattr(node_loop, "time", CappedSleep(cap_s))  # noqa: B010 - the loop module's own `time`
    return True


@dataclass
class Link:
    """What the SuperNode's output says of its connection (noted by the supervisor's reader
    thread)."""

    address: str
    restart_after_s: float  # without a connection this long, the supervisor restarts it
    stable_s: float  # connected this long, it counts as having worked
    node_id: str = ""
    codes: list[int] = field(default_factory=list)  # Flower exit codes it printed
    lost_reason: str = ""  # why the launcher ended it
    lost_at: float | None = field(default_factory=time.monotonic)  # not connected yet
    up_since: float | None = None
    longest_up_s: float = 0.0

    def read(self, line: str) -> str | None:
        """Note one line of output; a line for the site's console, if it says one."""
        if (found := _FLOWER_EXIT.search(line)) is not None:
            self.codes.append(int(found.group(1)))
        elif LOST_MARKER in line:
            self.lost_reason = line.split(LOST_MARKER, 1)[1].strip(": \n").split(";")[0]
        elif (found := _CONNECTED.search(line)) is not None:
            self.node_id = found.group(1)
            self._up()
            return f"connected to the coordinator at {self.address} as node {self.node_id}."
        elif self.node_id and self.lost_at is not None and any(s in line for s in _RECONNECTED):
            down_s = time.monotonic() - self.lost_at
            self._up()
            return f"reconnected to the coordinator after {down_s:.0f} s."
        elif _RETRYING in line and self.up_since is not None:
            self.longest_up_s = max(self.longest_up_s, time.monotonic() - self.up_since)
            self.up_since, self.lost_at = None, time.monotonic()
            return (
                "lost the connection to the coordinator; Flower retries (restarted if it is "
                f"still lost after {self.restart_after_s:g} s)."
            )
        return None

    def _up(self) -> None:
        self.lost_at, self.up_since = None, self.up_since or time.monotonic()

    def lost_for_s(self) -> float:
        return 0.0 if self.lost_at is None else time.monotonic() - self.lost_at

    def worked(self) -> bool:
        """Whether it stayed connected for ``stable_s`` at some point."""
        up_s = 0.0 if self.up_since is None else time.monotonic() - self.up_since
        return max(self.longest_up_s, up_s) >= self.stable_s


def _lost(reason: str) -> None:
    """End this SuperNode at once: its threads cannot be joined (Flower's Runtime API thread
    never ends by itself), and `fedscan client start` stops what it started."""
    print(f"{LOST_MARKER}: {reason}; exiting to be restarted.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(LOST_EXIT)


def _thread_died(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "a"
    _lost(f"its {name} thread died of {args.exc_type.__name__}: {args.exc_value}")


# The heartbeat interval this SuperNode announces (Flower: 30 s). The SuperLink marks a site
# offline after 2 missed intervals: at 30 s a killed site stalled its round and was refused on
# restart for about 60 s, at 15 s for about 30 s. 15 s still leaves two tries of Flower's 5 s
# call per interval on a loaded host (Flower's floor is 10 s).
HEARTBEAT_S = 15


def announce_heartbeat(interval_s: int) -> bool:
    """Send heartbeats every ``interval_s`` and announce it to the SuperLink; False (Flower's
    30 s) if this Flower keeps the interval elsewhere."""
    try:
        from flwr.client.grpc_rere_client import connection
        from flwr.supercore import heartbeat
    except ImportError:
        return False
    modules = (connection, heartbeat)
    if not all(isinstance(getattr(m, "HEARTBEAT_DEFAULT_INTERVAL", None), int) for m in modules):
        log.warning("This Flower's heartbeat is not where fedscan expects it; it stays at 30 s.")
        return False
    for module in modules:
        setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", interval_s)  # noqa: B010 - Flower's constant
    return True


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name VALUE`` in ``argv`` (the SuperNode's own arguments)."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def start_warm_exec(argv: list[str]) -> subprocess.Popen | None:
    """With ``--isolation process``, the site's executor (:mod:`fedscan.client.warm_exec`) for
    this SuperNode's Runtime API; it ends with this process (it watches its PID)."""
    if _option(argv, "--isolation") != "process":
        return None
    address = f"{_option(argv, '--host') or '127.0.0.1'}:{_option(argv, '--port') or '9094'}"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedscan.client.warm_exec",
            "--runtime-api-address",
            address,
            "--parent-pid",
            str(os.getpid()),
        ],
        stdin=subprocess.DEVNULL,
    )


def _watch_executor(executor: subprocess.Popen) -> None:
    """A SuperNode whose executor died would take messages and never answer them: end it, so
    ``fedscan client start`` restarts both."""
    code = executor.wait()
    _lost(f"its ClientApp executor exited (status {code})")


def main() -> None:
    from flwr.supernode.cli import flower_supernode

    executor = start_warm_exec(sys.argv[1:])
    if executor is not None:
        threading.Thread(target=_watch_executor, args=(executor,), daemon=True).start()
    if os.environ.get(POLL_ENV):
        cap_supernode_polling(float(os.environ[POLL_ENV]))
    announce_heartbeat(HEARTBEAT_S)
    threading.excepthook = _thread_died
    flower_supernode()  # returns only when Flower's loop ended on an error it logged
    _lost("its connection to the coordinator ended (see the error above)")


if __name__ == "__main__":
    main()
