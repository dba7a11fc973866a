"""A test client of the API that reads as its users do: every request but ``/health`` needs
the API token, and a read may show the dashboard's code instead (HTTP Basic's password)."""

from __future__ import annotations

import base64
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.api.token import load_token, login_code
from orchestrator.config import Settings


def api_client(
    settings: Settings,
    engine: sa.Engine,
    *,
    browser: bool = False,
    base_url: str = "http://127.0.0.1",
    **kwargs: Any,
) -> TestClient:
    """A client of a new app on ``engine``: with the token, as a script sends it, or, with
    ``browser``, with only the dashboard's code, as a browser sends its link's."""
    app = create_app(settings, engine, **kwargs)
    token = load_token(settings).value
    if browser:
        headers = {"Authorization": basic(f"orch:{login_code(token)}")}
    else:
        headers = {"Authorization": f"Bearer {token}"}
    return TestClient(app, base_url=base_url, headers=headers, raise_server_exceptions=False)


def basic(credentials: str) -> str:
    """``Authorization: Basic`` of ``user:password``, as a browser sends it."""
    return "Basic " + base64.b64encode(credentials.encode()).decode()
