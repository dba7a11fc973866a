"""The fake GitHub's webhooks: the payload of each change, and deliveries signed and sent
as GitHub sends them, each kept (with how the receiver answered) so a test can read them
and send one again, same id. A payload's ``_sender`` names the login that becomes its
``sender`` when the fake queues it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from orchestrator.forge import fake_github_json as j
from orchestrator.forge.base import sign_webhook
from orchestrator.forge.fake_github_model import (
    FakeCheckRun,
    FakeComment,
    FakeIssue,
    FakeRepo,
    FakeReview,
    FakeStatus,
    Json,
    stamp,
)

__all__ = ["Delivery", "WebhookSender"]

DELIVERY_TIMEOUT_S = 10.0
HOOK_ID = 424242


@dataclass
class Delivery:
    """One webhook delivery: what was sent, and how the receiver answered each time."""

    id: str
    event: str
    payload: Json
    body: bytes
    # The receiver's HTTP status of each attempt (None: it could not be reached).
    statuses: list[int | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def action(self) -> str | None:
        value = self.payload.get("action")
        return value if isinstance(value, str) else None

    @property
    def status(self) -> int | None:
        """The receiver's answer to the latest attempt."""
        return self.statuses[-1] if self.statuses else None


class WebhookSender:
    """Sends deliveries to one URL with one secret, and keeps every one it made."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.secret: bytes = b""
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        # Never through a proxy from the environment: the receiver is on 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def make(self, event: str, payload: Json) -> Delivery:
        """A new delivery of ``event`` (a fresh uuid, as GitHub's X-GitHub-Delivery)."""
        body = json.dumps(payload, sort_keys=True).encode()
        delivery = Delivery(str(uuid.uuid4()), event, payload, body)
        with self._lock:
            self.deliveries.append(delivery)
        return delivery

    def send(self, delivery: Delivery) -> None:
        """POST ``delivery`` to the URL (when one is set); its answer is kept, never raised."""
        if self.url is None:
            return
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/fake",
            "X-GitHub-Event": delivery.event,
            "X-GitHub-Delivery": delivery.id,
            "X-GitHub-Hook-ID": str(HOOK_ID),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
        }
        if self.secret:
            headers["X-Hub-Signature-256"] = sign_webhook(self.secret, delivery.body)
        request = urllib.request.Request(  # noqa: S310 (the URL is the test's own, http on 127.0.0.1)
            self.url, data=delivery.body, headers=headers, method="POST"
        )
        status: int | None
        try:
            with self._opener.open(request, timeout=DELIVERY_TIMEOUT_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            status = None
            delivery.errors.append(str(exc))
        with self._lock:
            delivery.statuses.append(status)

    def find(self, delivery_id: str) -> Delivery | None:
        """The delivery with id ``delivery_id``, if one was made."""
        with self._lock:
            return next((d for d in self.deliveries if d.id == delivery_id), None)


# -- payloads: what GitHub sends on each change --------------------------------------
def issue_event(
    base: str, repo: FakeRepo, issue: FakeIssue, action: str, by: str, label: str = ""
) -> Json:
    payload: Json = {
        "action": action,
        "issue": j.issue_json(base, repo, issue),
        "repository": j.repo_json(base, repo),
        "_sender": by,
    }
    if label:
        payload["label"] = j.label_json(base, repo, label)
    return payload


def pull_event(
    base: str, repo: FakeRepo, pull: Json, action: str, by: str, before: str = ""
) -> Json:
    """``pull_request``, with the pull request's JSON as it is now (``synchronize`` also
    names the head ``before`` the push and ``after`` it)."""
    payload: Json = {
        "action": action,
        "number": pull["number"],
        "pull_request": pull,
        "repository": j.repo_json(base, repo),
        "_sender": by,
    }
    if action == "synchronize":
        payload["before"], payload["after"] = before, pull["head"]["sha"]
    return payload


def review_event(base: str, repo: FakeRepo, pull: Json, review: FakeReview) -> Json:
    return {
        "action": "submitted",
        "review": j.review_json(base, repo, review),
        "pull_request": pull,
        "repository": j.repo_json(base, repo),
        "_sender": review.author,
    }


def check_run_event(base: str, repo: FakeRepo, run: FakeCheckRun, action: str) -> Json:
    return {
        "action": action,
        "check_run": j.check_run_json(base, repo, run),
        "repository": j.repo_json(base, repo),
        "_sender": "github-actions[bot]",
    }


def status_event(base: str, repo: FakeRepo, status: FakeStatus, commit: Json) -> Json:
    """``status``; ``commit`` is the commit's JSON (``fake_github_json.commit_json``)."""
    when = stamp(status.created_at)
    return {
        "id": status.id,
        "sha": status.sha,
        "name": repo.full_name,
        "target_url": status.target_url,
        "context": status.context,
        "description": status.description,
        "state": status.state,
        "commit": commit,
        "branches": [],
        "created_at": when,
        "updated_at": when,
        "repository": j.repo_json(base, repo),
        "_sender": "github-actions[bot]",
    }


def comment_event(base: str, repo: FakeRepo, issue: FakeIssue, comment: FakeComment) -> Json:
    return {
        "action": "created",
        "issue": j.issue_json(base, repo, issue),
        "comment": j.comment_json(base, repo, issue.number, comment),
        "repository": j.repo_json(base, repo),
        "_sender": comment.author,
    }
