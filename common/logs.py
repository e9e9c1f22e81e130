"""Logging set-up shared by the processes Flower starts for fedscan (ServerApp, ClientApp).

Opacus calls ``logging.basicConfig`` when ``opacus.utils.module_utils`` is imported, which gives
the root logger a stderr handler; every record that propagates to root (fedscan's and Flower's)
was then printed a second time, in Opacus' format, and ``fedscan logs`` showed each line twice.
:func:`claim_root_logger` runs first in those processes, so that call finds a handler and does
nothing. The CLI configures logging itself (``cli/main.py``) and does not use this.

:func:`log_to_stderr` makes fedscan's INFO lines that process's output: the ServerApp's is the
run's log (``fedscan logs``); the ClientApp's is the site's own console (``supernode.log``),
which Flower does not send to the coordinator.
"""

from __future__ import annotations

import logging


def claim_root_logger() -> None:
    """Give the root logger a NullHandler unless it has a handler already."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_stderr() -> None:
    """fedscan's INFO and above to stderr, once per process, and the root logger claimed."""
    claim_root_logger()
    logger = logging.getLogger("fedscan")
    if not any(getattr(handler, "fedscan_stderr", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.fedscan_stderr = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
