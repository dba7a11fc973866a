"""``POST /webhooks/github``: GitHub's deliveries, proven by their signature alone.

GitHub cannot send the API token, so the guard lets this path through without one
(``Policy.signed_paths``) and caps its body at ``ORCH_GITHUB_WEBHOOK_MAX_BODY_BYTES``; the
route then refuses, before it parses or does anything, every body whose
``X-Hub-Signature-256`` is not the HMAC of the secret in the environment variable named by
``ORCH_GITHUB_WEBHOOK_SECRET_ENV``: 401. No secret set: 404, the endpoint is off (a 4xx:
the server is well, it is not set up for this). What a delivery does is
``orchestrator.webhooks``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from orchestrator.api import models as M
from orchestrator.api.errors import error_response
from orchestrator.api.state import Api
from orchestrator.forge.base import verify_webhook

GITHUB_PATH = "/webhooks/github"
# GitHub's delivery ids are GUIDs and its event names snake_case words; anything else is
# not GitHub's, and is not written to the database.
_DELIVERY_RE = re.compile(r"[A-Za-z0-9-]{1,100}\Z")
_EVENT_RE = re.compile(r"[a-z_]{1,64}\Z")


class WebhookOut(BaseModel):
    """What a webhook delivery did."""

    model_config = ConfigDict(extra="forbid")

    delivery: str = Field(description="Its X-GitHub-Delivery id.")
    event: str
    action: str = Field(
        description="file, cancel, nothing, pong, recorded, ignored or duplicate (a copy)."
    )
    task: str | None = Field(description="The task filed, cancelled or found, if any.")
    reasons: list[str]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookOut, "description": "Acted on (a task filed or cancelled...)"},
    401: {"model": M.ErrorOut, "description": "The signature is missing or wrong"},
    404: {"model": M.ErrorOut, "description": "Webhooks are off: no secret is set"},
    413: {
        "model": M.ErrorOut,
        "description": "The body is larger than ORCH_GITHUB_WEBHOOK_MAX_BODY_BYTES",
    },
    422: {"model": M.ErrorOut, "description": "Signed, but not a GitHub delivery it can read"},
    503: {"model": M.ErrorOut, "description": "The database is unavailable"},
}


def webhook_router(api: Api) -> APIRouter:
    """The forges' webhook routes."""
    router = APIRouter()
    st = api.settings

    @router.post(
        GITHUB_PATH,
        status_code=202,
        response_model=WebhookOut,
        responses=_RESPONSES,
        tags=["forge"],
    )
    async def github(request: Request) -> JSONResponse:
        """A GitHub webhook delivery (content type application/json), signed with the
        secret; ``issues`` events file and cancel tasks, others are recorded (202)."""
        secret = os.environ.get(st.github_webhook_secret_env, "")
        if not secret:
            return error_response(
                404, f"webhooks are off: {st.github_webhook_secret_env} is not set on the server"
            )
        body = await request.body()
        signature = request.headers.get("x-hub-signature-256")
        if not verify_webhook(secret.encode(), body, signature):
            return error_response(401, "the X-Hub-Signature-256 signature is missing or wrong")
        delivery_id = request.headers.get("x-github-delivery", "")
        event = request.headers.get("x-github-event", "")
        if not _DELIVERY_RE.match(delivery_id) or not _EVENT_RE.match(event):
            return error_response(422, "X-GitHub-Delivery and X-GitHub-Event are needed")
        try:
            payload = json.loads(body)
        except ValueError:
            return error_response(422, "the body is not JSON (set the content type to JSON)")
        if not isinstance(payload, dict):
            return error_response(422, "the body is not a JSON object")
        # Imported here, by a signed delivery: intake and the landing's gates, which a server
        # with no forge never needs, are not imported as the server starts.
        from orchestrator import webhooks

        delivery = webhooks.Delivery(delivery_id, event, payload)
        try:
            outcome = await run_in_threadpool(webhooks.receive, api.engine, st, delivery)
        except webhooks.PayloadError as exc:
            return error_response(422, f"{event}: {exc}")
        if outcome.action == "file":
            api.wake()
        out = WebhookOut(
            delivery=delivery_id,
            event=event,
            action=outcome.action,
            task=outcome.task,
            reasons=list(outcome.reasons),
        )
        return JSONResponse(out.model_dump(), status_code=200 if outcome.acted else 202)

    return router
