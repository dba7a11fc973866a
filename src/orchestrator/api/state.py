"""``Api``: what every route of the app shares (settings, engines, this process's facts).

Its own module so that ``routes``, ``metrics`` and ``dashboard`` take it from here, and
``app``, which imports them all, is imported by none of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orchestrator import taskdir
from orchestrator.api.errors import ApiError, responses
from orchestrator.api.token import ApiToken
from orchestrator.api.totals import Totals
from orchestrator.config import Settings
from orchestrator.store import queries, reader
from orchestrator.store.rows import JobRow, TaskRow

__all__ = ["Api"]

_bearer = HTTPBearer(
    auto_error=False,
    description="`ORCH_API_TOKEN`, else the token in `<ORCH_HOME>/api-token`. Needed for "
    "every request but `/health`; a read may send the dashboard's code instead, as HTTP "
    "Basic's password (its link: `orch dashboard`).",
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

    def auth_codes(self) -> tuple[int, ...]:
        """The status a route that needs the token may answer for it: (401,), or none when
        the server runs without a token (for a route that lists its errors' media type)."""
        return (401,) if self.token is not None else ()

    def auth_router(self) -> APIRouter:
        """A router for routes that need the token (every one but ``/health``): each
        declares the bearer scheme and its 401, unless the server runs without a token, so
        ``/openapi.json`` claims no authentication the server does not ask for."""
        if self.token is None:
            return APIRouter()
        return APIRouter(
            dependencies=[Depends(_bearer_in_schema)], responses=responses(*self.auth_codes())
        )

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
