"""What a forge's webhook delivery does, once its signature was checked (``api/webhooks.py``).

Each delivery is taken once: its id (GitHub's ``X-GitHub-Delivery``) is claimed in
``webhook_deliveries`` before anything is done, a copy is acknowledged and left, and if
acting on it fails the claim is given back, so GitHub's redelivery can try again.

``issues`` events go to intake (``intake.apply_issue``: the issue as the payload shows it
decides, so an ``opened`` or ``labeled`` issue that carries the repo's intake label is
filed, and an ``unlabeled`` or ``closed`` one cancels its task). Every other event is
recorded and handed to ``on_forge_event``, the hook where landing through pull requests
(check runs, reviews, merges) is to read it; until then it does nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator import intake
from orchestrator.config import Settings
from orchestrator.forge.base import ForgeIssue
from orchestrator.forge.settings import forge_settings
from orchestrator.gates.pull_land import WAITING_WORDS
from orchestrator.store import deliveries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import RepoRow

# The issue actions intake reads; "edited", "assigned", ... change nothing it decides on.
ISSUE_ACTIONS = frozenset({"opened", "reopened", "labeled", "unlabeled", "closed"})


class PayloadError(ValueError):
    """A signed delivery whose payload is not what its event promises."""


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: its id, its event, its JSON payload."""

    id: str
    event: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class WebhookOutcome:
    """What a delivery did. ``acted``: something was decided on it (answered 200); else it
    was only recorded (202). ``task``: the task filed or cancelled, if any."""

    acted: bool
    action: str
    reasons: tuple[str, ...]
    task: str | None = None
    duplicate: bool = False


EventHook = Callable[[sa.Engine, Settings, RepoRow | None, Delivery], WebhookOutcome]


# Events that may change what a waiting pull request's landing decides.
PULL_EVENTS = frozenset(
    {"pull_request", "pull_request_review", "check_run", "check_suite", "status"}
)


def on_forge_event(
    engine: sa.Engine, settings: Settings, repo: RepoRow | None, delivery: Delivery
) -> WebhookOutcome:
    """The hook for every event intake does not take: a pull request's checks, reviews or
    head changed, so the repo's tasks waiting for their pull request are read now instead
    of at their next poll (the payload is not trusted for more than "look again": the
    landing reads the forge itself). Anything else is recorded and acknowledged."""
    del settings
    where = f" for {repo.name}" if repo is not None else ""
    if repo is None or delivery.event not in PULL_EVENTS:
        return WebhookOutcome(False, "recorded", (f"{delivery.event} event recorded{where}",))
    with engine.begin() as conn:
        woken = jobq.wake_waiting(conn, now=time.time(), said=WAITING_WORDS, repo_id=repo.id)
    return WebhookOutcome(
        woken > 0,
        "woken" if woken else "recorded",
        (f"{delivery.event} event{where}: {woken} task(s) waiting for a pull request woken",),
    )


def receive(
    engine: sa.Engine,
    settings: Settings,
    delivery: Delivery,
    *,
    hook: EventHook = on_forge_event,
) -> WebhookOutcome:
    """Act on a delivery whose signature was checked: once per delivery id."""
    with engine.begin() as conn:
        fresh = deliveries.claim_delivery(conn, delivery.id, delivery.event, now=time.time())
    if not fresh:
        why = f"delivery {delivery.id} was received before; not acted on twice"
        return WebhookOutcome(False, "duplicate", (why,), duplicate=True)
    try:
        return _act(engine, settings, delivery, hook)
    except BaseException:
        with engine.begin() as conn:
            deliveries.forget_delivery(conn, delivery.id)
        raise


def _act(
    engine: sa.Engine, settings: Settings, delivery: Delivery, hook: EventHook
) -> WebhookOutcome:
    if delivery.event == "ping":
        return WebhookOutcome(True, "pong", ("the webhook reaches this server",))
    full_name = _repo_name(delivery.payload)
    with engine.connect() as conn:
        repo = intake.repo_for_forge(conn, full_name) if full_name else None
    if delivery.event != "issues":
        return hook(engine, settings, repo, delivery)
    if repo is None:
        why = f"no registered repo is forge repository {full_name or '?'}"
        return WebhookOutcome(False, "ignored", (why,))
    action = str(delivery.payload.get("action", ""))
    if action not in ISSUE_ACTIONS:
        return WebhookOutcome(False, "ignored", (f"issues action {action!r} changes nothing",))
    fs = forge_settings(repo.options)
    if fs is None:  # checked by repo_for_forge; here for the type
        return WebhookOutcome(False, "ignored", (f"repo {repo.name} has no forge",))
    issue = issue_of(delivery.payload)
    result = intake.apply_issue(engine, settings, repo, issue, fs.intake_label)
    return WebhookOutcome(True, result.action.value, result.reasons, task=result.task)


def _repo_name(payload: Mapping[str, Any]) -> str | None:
    repo = payload.get("repository")
    name = repo.get("full_name") if isinstance(repo, Mapping) else None
    return name if isinstance(name, str) and name else None


def issue_of(payload: Mapping[str, Any]) -> ForgeIssue:
    """The issue of an ``issues`` payload; ``PayloadError`` when it has none."""
    raw = payload.get("issue")
    if not isinstance(raw, Mapping):
        msg = "an issues event without an issue"
        raise PayloadError(msg)
    number = raw.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        msg = "an issue without a number"
        raise PayloadError(msg)
    user = raw.get("user")
    labels = raw.get("labels")
    state = raw.get("state")
    return ForgeIssue(
        number=number,
        title=_text(raw.get("title")),
        body=_text(raw.get("body")),
        url=_text(raw.get("html_url")),
        author=_text(user.get("login")) if isinstance(user, Mapping) else "",
        labels=tuple(
            _text(label.get("name"))
            for label in (labels if isinstance(labels, list) else [])
            if isinstance(label, Mapping)
        ),
        state="closed" if state == "closed" else "open",
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
