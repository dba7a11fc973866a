"""Errors as JSON ``{"error": message}``, never a stack trace, and how the schema says so."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from orchestrator.api import models as M
from orchestrator.errors import NotFoundError, OrchestratorError, UsageError

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An HTTP error whose detail is the message shown as ``{"error": ...}``."""


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI, routers: list[APIRouter]) -> None:
    """Every error as ``{"error": message}``: ours, FastAPI's, the database's, and bugs."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's only 400: a body that is not JSON. A bad body is a 422 here.
            return error_response(422, f"invalid request: {exc.detail}")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path; a client
            # deserves all of them (GET and POST /tasks are two routes).
            headers["Allow"] = ", ".join(_allowed_methods(routers, request.url.path))
        return error_response(exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(UsageError)
    async def usage(_request: Request, exc: UsageError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(sa.exc.OperationalError)
    async def database(_request: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc.orig, extra={"action": "api"})
        return error_response(503, "database unavailable; try again")

    @app.exception_handler(OrchestratorError)
    async def ours(_request: Request, exc: OrchestratorError) -> JSONResponse:
        return error_response(500, str(exc))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log, never to the client.
        log.error("internal error", exc_info=exc, extra={"action": "api"})
        return error_response(500, "internal error (see the server log)")


_ERROR_TEXT = {
    400: "Bad request",
    401: "The bearer token is missing or wrong",
    403: "A browser's request from another origin (Origin, Sec-Fetch-Site)",
    404: "No such task, job, artifact or log",
    409: "The task is not in a state that allows this",
    413: "The body is larger than ORCH_API_MAX_BODY_BYTES",
    422: "The request does not validate",
    503: "The database is unavailable",
}


def json_response(model: BaseModel) -> Response:
    """A model built here, sent as it is: FastAPI would validate it a second time."""
    return Response(model.model_dump_json(), media_type="application/json")


def _allowed_methods(routers: list[APIRouter], path: str) -> list[str]:
    methods: set[str] = set()
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                methods |= route.methods or set()
    return sorted(methods)


def responses(*codes: int, text: bool = False) -> dict[int | str, dict[str, Any]]:
    """Error responses for the schema; ``text``: the route answers text, its errors JSON."""
    if not text:
        return {code: {"model": M.ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}
    # A route whose response class is text would document a "model" as text: give the
    # content explicitly. ErrorOut is in the components through the JSON routes above.
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    return {
        code: {"description": _ERROR_TEXT[code], "content": {"application/json": {"schema": ref}}}
        for code in codes
    }
