"""The FastAPI app: ``create_app(settings, engine)``.

What its routes share, ``Api``, is in ``state``; the JSON routes are in ``routes``,
``/repos`` in ``repos``, ``/metrics`` in ``metrics``, the dashboard in ``dashboard``;
errors (always JSON ``{"error": message}``) in ``errors``. Every request passes ``guard``
first: the Host allowlist; ``Authorization: Bearer <token>`` (``token``: ORCH_API_TOKEN or
``<home>/api-token``), for a read the dashboard's code instead (HTTP Basic's password, which
the link `orch dashboard` prints carries); for every mutation the same-origin check; and the
body cap.
``POST /webhooks/github`` (``webhooks``) is the one mutation without the token: it is
signed by GitHub instead, and refused unless the signature is right.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from orchestrator import __version__
from orchestrator.api.dashboard import dashboard_router
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.guard import Guard, Policy, allowed_hosts
from orchestrator.api.metrics import metrics_router
from orchestrator.api.repos import repos_router
from orchestrator.api.routes import json_routers
from orchestrator.api.state import Api
from orchestrator.api.token import load_token, login_code
from orchestrator.api.webhooks import GITHUB_PATH, webhook_router
from orchestrator.config import Settings

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"


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
            "Tasks from ticket to merged, deployed and watched. Every request but "
            "`/health` needs `Authorization: Bearer <token>` (`ORCH_API_TOKEN`, else the "
            "token in `<ORCH_HOME>/api-token`); a read may send instead the dashboard's code "
            "as HTTP Basic's password, which the dashboard's link gives a browser (`orch "
            "dashboard` prints it). Mutations "
            "from a browser need this server's own origin. "
            "A Host other than 127.0.0.1, localhost, ::1 and `ORCH_API_ALLOWED_HOSTS` is "
            "answered 421; a body over `ORCH_API_MAX_BODY_BYTES`, 413. "
            'Errors are `{"error": message}`.'
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.api = api
    routers = [
        *json_routers(api),
        repos_router(api),
        metrics_router(api),
        dashboard_router(api),
        webhook_router(api),
    ]
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
        # GitHub cannot send the token: the route checks the delivery's signature instead.
        signed_paths={GITHUB_PATH: settings.github_webhook_max_body_bytes},
        dashboard=login_code(token.value) if token is not None else None,
    )
    # Inside the error handlers, outside the routes: it answers before a route reads a body.
    app.add_middleware(Guard, policy=policy)
    return app
