"""``python -m fedscan.client.supernode_launcher ARGS…``: Flower's SuperNode, polling more often.

Flower 1.39's SuperNode loop sleeps 3 s whenever the coordinator has no
message for it, and 0.5 s between checks for the ClientApp's reply; both are
hard-coded, and they are most of a round's latency on a fast network. This
launcher runs the unchanged ``flower-supernode`` entry point after capping the
sleeps of that one loop module at ``FEDSCAN_SUPERNODE_POLL_S`` seconds (site.toml
``[coordinator] poll-interval-s``). If a later Flower moves the loop, the cap
is skipped with a warning and the SuperNode runs as stock.
"""

from __future__ import annotations

import logging
import os
import time
from types import ModuleType

log = logging.getLogger(__name__)
POLL_ENV = (
    "FEDSCAN_SUPERNODE_POLL_S"  # set by `fedscan client start` from site.toml's poll-interval-s
)


class CappedSleep:
    """The ``time`` module as one module sees it, every sleep capped at ``cap_s``."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap_s))


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


def main() -> None:
    from flwr.supernode.cli import flower_supernode

    if os.environ.get(POLL_ENV):
        cap_supernode_polling(float(os.environ[POLL_ENV]))
    flower_supernode()


if __name__ == "__main__":
    main()
