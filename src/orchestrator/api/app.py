"""The FastAPI app: ``create_app(settings, engine)``, and ``Api``, what its routes share.

The JSON routes are in ``routes``, ``/metrics`` in ``metrics``, the dashboard in
``dashboard``; errors (always JSON ``{"error": message}``) in ``errors``. When
``ORCH_API_TOKEN`` is set every mutation needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
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
from orchestrator.api.snapshot import Refreshing
from orchestrator.config import Settings
from orchestrator.store import queries, reader
from orchestrator.store.queries import JobRow, TaskRow

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"

_bearer = HTTPBearer(
    auto_error=False,
    description="`ORCH_API_TOKEN`. Needed for every mutation when the token is set.",
)


class Api:
    """What every route needs: settings, engines, and this process's facts."""

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        *,
        scheduler: bool,
        wake: Callable[[], None] | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
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
        """What every mutation depends on: the bearer token, when one is configured.

        Without a token there is no dependency at all, so ``/openapi.json`` does not claim
        an authentication the server does not ask for.
        """
        return [Depends(self.check_token)] if self.settings.api_token else []

    def check_token(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        """Refuse a mutation without the configured bearer token."""
        token = self.settings.api_token
        given = credentials.credentials if credentials is not None else ""
        # Constant-time: how much of a guess was right must not show in the timing.
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(
                401,
                "this needs Authorization: Bearer <ORCH_API_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
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


def create_app(
    settings: Settings,
    engine: sa.Engine,
    *,
    scheduler: bool = False,
    wake: Callable[[], None] | None = None,
) -> FastAPI:
    """The API and the dashboard on ``engine``; ``wake`` nudges a worker after a mutation."""
    api = Api(settings, engine, scheduler=scheduler, wake=wake)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        api.stopping.set()

    app = FastAPI(
        title="orchestrator",
        version=__version__,
        description=(
            "Tasks from ticket to merged, deployed and watched. Mutations need "
            "`Authorization: Bearer <ORCH_API_TOKEN>` when the token is set. "
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
    return app
