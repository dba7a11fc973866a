"""Waiting out a database that is gone for a while: tries spaced out, logged once.

The loop and each job's bookkeeping try again until the database answers: a job's work,
done or not yet started, must not be lost or redone because the database was gone for a
moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from orchestrator.store import is_transient

__all__ = ["DB_RETRY_FIRST_S", "DB_RETRY_MAX_S", "Outage", "until_db_answers"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# While the database is unreachable, tries are spaced from the first to the most.
DB_RETRY_FIRST_S = 0.1
DB_RETRY_MAX_S = 2.0


class Outage:
    """Backoff between tries while the database is gone, logged once as it goes and comes."""

    def __init__(self, where: str, job: int | None = None) -> None:
        self.where = where
        self.job = job
        self.since: float | None = None
        self.delay_s = DB_RETRY_FIRST_S

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "database unavailable (%s): %s; trying again",
                self.where,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                extra={"job": self.job, "action": "db-down"},
            )
        else:
            self.delay_s = min(self.delay_s * 2, DB_RETRY_MAX_S)

    def ok(self) -> None:
        if self.since is not None:
            log.warning(
                "database back (%s) after %.1f s",
                self.where,
                time.monotonic() - self.since,
                extra={"job": self.job, "action": "db-up"},
            )
            self.since = None
            self.delay_s = DB_RETRY_FIRST_S


def until_db_answers(
    what: str, job: int, fn: Callable[[], _T], *, give_up: Callable[[], bool]
) -> _T:
    """``fn()``, tried again while the database is unreachable, until it answers.

    Gives up (raises) only when ``give_up()`` says so (the worker stops without draining):
    the job then stays running under this worker's lease, and recovery re-queues it without
    spending a retry.
    """
    outage = Outage(what, job)
    while True:
        try:
            value = fn()
        except sa.exc.SQLAlchemyError as exc:
            if not is_transient(exc) or give_up():
                raise
            outage.failed(exc)
            time.sleep(outage.delay_s)
            continue
        outage.ok()
        return value
