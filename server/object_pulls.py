"""The coordinator's pulls of a reply's objects, bounded by the exchange that waits for the reply.

Flower 1.39's deployment Grid (``flwr.superlink.grid.http_grid``) lists a reply once the site has
pushed its message, then pulls the reply's objects with a budget of its own: first retry after
1 s, doubling to 10 s, for up to 7 200 s. A site killed while it uploaded a reply leaves a listed
reply whose objects never come, and the pull waits until the SuperLink drops that upload: 181 s
in the secure-aggregation deployment test, whose ``round-timeout-s`` is 60, and the whole round
with it. :class:`PullBudget` makes those pulls retry first after 0.05 s and give up at the
exchange's deadline (never sooner than 2 s after the pull began): the reply becomes Flower's
"objects unavailable" error, so the site has dropped at that stage, as the round timeout says.

Invariant: only ``http_grid``'s own ``pull_objects`` name is replaced, and only once per process
(a second budget replaces the first); where Flower's Grid does not pull there, its own budget
stays and :func:`bound_object_pulls` says so.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIRST_PULL_RETRY_S = 0.05  # Flower's 1 s: a reply listed before its objects waited 1 s or 3 s
MIN_PULL_S = 2.0  # a pull that starts at the deadline still gets a reply that is all there


@dataclass
class PullBudget:
    """The deadline (``time.monotonic()``) of the exchange now waiting; None between exchanges,
    when Flower's own time limit applies."""

    deadline: float | None = None

    def pull(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``original`` (Flower's ``pull_objects``) with a sooner first retry and, during an
        exchange, no longer than its deadline."""
        kwargs.setdefault("initial_backoff", FIRST_PULL_RETRY_S)
        if self.deadline is not None:
            kwargs["max_time"] = max(self.deadline - time.monotonic(), MIN_PULL_S)
        return original(*args, **kwargs)


def bound_object_pulls(budget: PullBudget) -> bool:
    """Route the deployment Grid's object pulls through ``budget``; False where this Flower's
    Grid does not pull where fedscan expects (its own budget then stays)."""
    try:
        from flwr.superlink.grid import http_grid
    except ImportError:
        return False
    current = getattr(http_grid, "pull_objects", None)
    owner = (
        getattr(current.func, "__self__", None) if isinstance(current, functools.partial) else None
    )
    if isinstance(current, functools.partial) and isinstance(owner, PullBudget):
        current = current.args[0]  # replaced before, by another budget: wrap Flower's own
    if not callable(current):
        return False
    bounded = functools.partial(budget.pull, current)
    setattr(http_grid, "pull_objects", bounded)  # noqa: B010 - Flower's module-level name
    return True
