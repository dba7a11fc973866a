"""The FastAPI app: ``create_app(settings, engine)``, and ``Api``, what its routes share.

The JSON routes are in ``routes``, ``/metrics`` in ``metrics``, the dashboard in
``dashboard``; errors (always JSON ``{"error": message}``) in ``errors``. Every request
passes ``guard`` first: the Host allowlist, and for every mutation the same-origin check
and ``Authorization: Bearer <token>`` (``token``: ORCH_API_TOKEN or ``<home>/api-token``),
and the body cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from orchestrator import __version__, taskdir
from orchestrator.api import reads
from orchestrator.api.errors import ApiError, install_error_handlers
from orchestrator.api.guard import Guard, Policy, allowed_hosts
from orchestrator.api.snapshot import Refreshing
from orchestrator.api.token import ApiToken, load_token
from orchestrator.config import Settings
from orchestrator.store import queries, reader
from orchestrator.store.queries import JobRow, TaskRow

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"

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
        self.totals = Refreshing(self._aggregates)
        # Set at shutdown: open log streams end instead of holding the server up.
        self.stopping = threading.Event()

    def _aggregates(self) -> reads.Aggregates:
        with self.reader.connect() as conn:
            return reads.aggregates(conn, self.settings, time.time())

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


def create_app(
    settings: Settings,
    engine: sa.Engine,
    *,
    scheduler: bool = False,
    wake: Callable[[], None] | None = None,
    insecure_no_token: bool = False,
) -> FastAPI:
    """The API and the dashboard on ``engine``; ``wake`` nudges a worker after a mutation.

    Closed by default: mutations need the token (``ORCH_API_TOKEN``, else the file in the
    home, made now when missing). ``insecure_no_token`` drops that one check; the Host
    allowlist, the same-origin check and the body cap stay.
    """
    token = None if insecure_no_token else load_token(settings)
    api = Api(settings, engine, scheduler=scheduler, wake=wake, token=token)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        api.stopping.set()

    app = FastAPI(
        title="orchestrator",
        version=__version__,
        description=(
            "Tasks from ticket to merged, deployed and watched. Mutations need "
            "`Authorization: Bearer <token>` (`ORCH_API_TOKEN`, else the token in "
            "`<ORCH_HOME>/api-token`) and, from a browser, this server's own origin. "
            "A Host other than 127.0.0.1, localhost, ::1 and `ORCH_API_ALLOWED_HOSTS` is "
            "answered 421; a body over `ORCH_API_MAX_BODY_BYTES`, 413. "
            'Errors are `{"error": message}`.'
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.api = api
    from orchestrator.api.dashboard import dashboard_router
    from orchestrator.api.metrics import metrics_router
    from orchestrator.api.routes import json_router

    routers = [json_router(api), metrics_router(api), dashboard_router(api)]
    install_error_handlers(app, routers)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # Swagger UI is vendored under /static: no CDN, the API works offline.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="orchestrator API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
        )

    for router in routers:
        app.include_router(router)
    policy = Policy(
        allowed_hosts=allowed_hosts(settings),
        token=token.value if token is not None else None,
        max_body_bytes=settings.api_max_body_bytes,
        token_source=token.where if token is not None else "",
    )
    # Inside the error handlers, outside the routes: it answers before a route reads a body.
    app.add_middleware(Guard, policy=policy)
    return app
