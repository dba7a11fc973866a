"""Aggregates over the whole history, computed off the request path.

The runner and merge counters and the LLM spend add up every job and merge result ever
recorded: on 100,000 jobs that is a scan of hundreds of milliseconds on SQLite, too slow for
a page polled every two seconds. ``Refreshing`` serves the last value computed and, when it
is older than its TTL, recomputes it in a background thread. Only the first call computes in
the caller's thread. Each value says when it was computed (``as_of``), so a reader knows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# The counters on /queue and the spend on /status are at most this old (plus one compute).
COUNTERS_TTL_S = 5.0


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """A value and the time it was computed."""

    value: T
    as_of: float


class Refreshing(Generic[T]):
    """A value served from memory and refreshed in the background once it is stale."""

    def __init__(self, compute: Callable[[], T], ttl_s: float = COUNTERS_TTL_S) -> None:
        self._compute = compute
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot[T] | None = None
        self._refreshing = False

    def get(self) -> Snapshot[T]:
        """The newest value; starts a refresh when it is stale (never waits for one)."""
        with self._lock:
            snap = self._snapshot
            if snap is None:
                # The first value: nothing to serve meanwhile, so compute it here.
                snap = self._snapshot = Snapshot(self._compute(), time.time())
                return snap
            if time.time() - snap.as_of >= self.ttl_s and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="api-refresh", daemon=True).start()
            return snap

    def _refresh(self) -> None:
        try:
            value = self._compute()
        except Exception:
            # The old value stays served; the next request past the TTL tries again.
            log.exception("refreshing an aggregate failed", extra={"action": "api"})
            with self._lock:
                self._refreshing = False
            return
        with self._lock:
            self._snapshot = Snapshot(value, time.time())
            self._refreshing = False
