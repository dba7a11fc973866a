"""``Api``: what every route of the app shares (settings, engines, this process's facts).

Its own module so that ``routes``, ``metrics`` and ``dashboard`` take it from here, and
``app``, which imports them all, is imported by none of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator import taskdir
from orchestrator.api.errors import ApiError
from orchestrator.api.token import ApiToken
from orchestrator.api.totals import Totals
from orchestrator.config import Settings
from orchestrator.store import queries, reader
from orchestrator.store.rows import JobRow, TaskRow

__all__ = ["Api"]

_bearer = HTTPBearer(
    auto_error=False,
    description="`ORCH_API_TOKEN`, else the token in `<ORCH_HOME>/api-token`. Needed for "
    "every mutation.",
)


def _bearer_in_schema(
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Names the bearer scheme in ``/openapi.json``; the guard checked the token already,
    before the body was read, and is the one place that decides."""


class Api:
    """What every route needs: settings, engines, and this process's facts."""

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        *,
        scheduler: bool,
        wake: Callable[[], None] | None,
        token: ApiToken | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        # None: `orch serve --insecure-no-token`.
        self.token = token
        self.reader = reader(engine)
        self.scheduler = scheduler
        self.wake = wake or (lambda: None)
        self.started_at = time.time()
        # The history's counters and spend, kept current without rescanning it.
        self.totals = Totals()
        # Set at shutdown: open log streams end instead of holding the server up.
        self.stopping = threading.Event()

    def mutation_dependencies(self) -> list[Any]:
        """What every mutation declares: the bearer scheme, unless the server runs without
        a token, so ``/openapi.json`` claims no authentication the server does not ask for.
        """
        return [Depends(_bearer_in_schema)] if self.token is not None else []

    def task(self, conn: sa.Connection, key: str) -> TaskRow:
        """The task, or 404 (a malformed key is no task either)."""
        if not taskdir.valid_key(key):
            raise ApiError(404, f"unknown task {key!r} (keys look like DEMO-7)")
        task = queries.get_task(conn, key)
        if task is None:
            raise ApiError(404, f"unknown task {key}")
        return task

    def job(self, conn: sa.Connection, task: TaskRow, job_id: int) -> JobRow:
        """The task's job ``job_id``, or 404."""
        job = queries.get_job(conn, job_id)
        if job is None or job.task_id != task.id:
            raise ApiError(404, f"{task.key} has no job {job_id}")
        return job
