"""``python -m fedscan.server.superlink_launcher ARGS…``: Flower's SuperLink with two settings
Flower 1.39 hard-codes changed.

- **The HTTP access log is off** unless ``FEDSCAN_SUPERLINK_ACCESS_LOG=1`` (coordinator.toml
  ``access-log = true``): uvicorn logs every control and runtime API request at INFO, about ten
  lines a second while a run is followed, which buries what an operator needs in the journal.
  Failed requests still show: uvicorn reports them through its error logger.
- **SQLite waits longer for a lock** (``busy_timeout``): Flower sets 5 s. On a loaded
  coordinator (load 11-14 on 2 cores) a writer holding the database while it stores a model
  update was seen to keep it longer than that, and the waiting call failed with
  ``database is locked``, which deactivated two sites. See :data:`BUSY_TIMEOUT_MS`.

Each change is made only where the installed Flower has the object fedscan expects; otherwise it
is skipped with a warning and the SuperLink runs as stock.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)
ACCESS_LOG_ENV = "FEDSCAN_SUPERLINK_ACCESS_LOG"
STOCK_SQLITE_ENV = "FEDSCAN_SUPERLINK_STOCK_SQLITE"  # bench/stress.py: Flower's own lock wait
# 120 s: longer than any single write seen under load (Flower's 5 s was exceeded at load 11-14),
# shorter than the 900 s a round waits by default, so a stuck database still surfaces as an error.
BUSY_TIMEOUT_MS = 120_000


def quiet_access_log(make_config: Callable[[int], dict[str, Any]]) -> Callable[[int], Any]:
    """``make_config`` (Flower's uvicorn log config) with the access logger at WARNING."""

    def config(level: int) -> dict[str, Any]:
        made = make_config(level)
        made["loggers"]["uvicorn.access"]["level"] = "WARNING"
        return made

    return config


def _patch_access_log() -> bool:
    # By module path: the package re-exports a function of the same name over the module.
    try:
        module: ModuleType | None = importlib.import_module("flwr.superlink.cli.flower_superlink")
    except ImportError:
        module = None
    if module is None or not callable(getattr(module, "get_uvicorn_log_config", None)):
        log.warning("This Flower's SuperLink has no uvicorn log config; access logs stay on.")
        return False
    setattr(  # noqa: B010 - Flower's own module attribute
        module, "get_uvicorn_log_config", quiet_access_log(module.get_uvicorn_log_config)
    )
    return True


def longer_busy_timeout(pragmas: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Flower's SQLite pragmas with ``busy_timeout`` raised to :data:`BUSY_TIMEOUT_MS`."""
    return tuple(
        (name, str(BUSY_TIMEOUT_MS) if name == "busy_timeout" else value) for name, value in pragmas
    )


def _patch_busy_timeout() -> bool:
    try:
        from flwr.supercore import sql_mixin
    except ImportError:
        sql_mixin = None  # type: ignore[assignment]
    pragmas = getattr(sql_mixin, "SQLITE_PRAGMAS", None)
    if not isinstance(pragmas, tuple) or "busy_timeout" not in dict(pragmas):
        log.warning("This Flower's SQLite settings are not where fedscan expects them; unchanged.")
        return False
    setattr(sql_mixin, "SQLITE_PRAGMAS", longer_busy_timeout(pragmas))  # noqa: B010
    return True


def main() -> None:
    from flwr.superlink.cli.flower_superlink import flower_superlink

    if os.environ.get(STOCK_SQLITE_ENV) != "1":
        _patch_busy_timeout()
    if os.environ.get(ACCESS_LOG_ENV) != "1":
        _patch_access_log()
    flower_superlink()


if __name__ == "__main__":
    main()
