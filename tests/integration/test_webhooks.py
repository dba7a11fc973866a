"""POST /webhooks/github: signed deliveries only, each acted on once, without the API token.

The app runs in-process (FastAPI's TestClient) on a real database (SQLite, or PostgreSQL
with ORCH_TEST_DATABASE_URL); deliveries are signed as GitHub signs them
(forge.base.sign_webhook).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orchestrator import repo_ops, task_ops, webhooks
from orchestrator.api import create_app
from orchestrator.config import Settings, load_settings
from orchestrator.forge.base import sign_webhook
from orchestrator.forge.settings import ForgeInput
from orchestrator.store import deliveries, queries
from orchestrator.store.rows import TaskRow
from orchestrator.store.schema import jobs as jobs_table
from orchestrator.store.schema import webhook_deliveries

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = "webhook-s3cret"
TOKEN = "api-t0ken"
BASE_URL = "http://127.0.0.1"
MakeRepo = Callable[..., Path]


def issue_payload(
    action: str,
    number: int = 7,
    *,
    labels: tuple[str, ...] = ("orch",),
    state: str = "open",
    repo: str = "octo/demo",
    title: str = "Fix the parser",
    author: str = "grace",
) -> dict[str, Any]:
    """An ``issues`` payload as GitHub sends it (the fields intake reads, and some others)."""
    return {
        "action": action,
        "issue": {
            "number": number,
            "title": title,
            "body": "It breaks on empty input.",
            "html_url": f"https://github.com/{repo}/issues/{number}",
            "user": {"login": author, "id": 1},
            "labels": [{"name": name, "color": "ededed"} for name in labels],
            "state": state,
        },
        "repository": {"full_name": repo, "private": False},
        "sender": {"login": author},
    }


class Hook:
    """An app over the test database, a repo on forge repository octo/demo, and a client
    that sends no API token (GitHub has none)."""

    def __init__(self, tmp_path: Path, db_url: str, engine: sa.Engine, repo: Path) -> None:
        self.engine = engine
        self.settings: Settings = load_settings(
            home=tmp_path / "home", database_url=db_url, api_token=TOKEN
        )
        repo_ops.add_repo(
            engine,
            "demo",
            repo,
            repo_ops.RepoInput(
                stages=["development", "testing", "deploy-staging"],
                forge=ForgeInput(forge="github", repo="octo/demo"),
            ),
        )
        self.client = self.make_client(self.settings)

    def make_client(self, settings: Settings) -> TestClient:
        app = create_app(settings, self.engine)
        return TestClient(app, base_url=BASE_URL, raise_server_exceptions=False)

    def send(
        self,
        payload: Any,
        *,
        event: str = "issues",
        delivery: str | None = None,
        secret: str = SECRET,
        signature: str | None = None,
        body: bytes | None = None,
        client: TestClient | None = None,
    ) -> httpx.Response:
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature or sign_webhook(secret.encode(), raw),
        }
        return (client or self.client).post("/webhooks/github", content=raw, headers=headers)

    def tasks(self) -> list[TaskRow]:
        with self.engine.connect() as conn:
            return queries.list_tasks(conn)

    def deliveries(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(webhook_deliveries.c.id, webhook_deliveries.c.event))
            return sorted((r.id, r.event) for r in rows)


@pytest.fixture
def hook(
    tmp_path: Path,
    migrated_db_url: str,
    engine: sa.Engine,
    make_repo: MakeRepo,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Hook]:
    monkeypatch.setenv("ORCH_GITHUB_WEBHOOK_SECRET", SECRET)
    h = Hook(tmp_path, migrated_db_url, engine, make_repo())
    yield h
    h.client.close()


def test_a_signed_delivery_files_the_task_without_the_api_token(hook: Hook) -> None:
    answer = hook.send(issue_payload("opened"), delivery="d-1")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "delivery": "d-1",
        "event": "issues",
        "action": "file",
        "task": "DEMO-1",
        "reasons": ["issue #7 is open and labeled 'orch'"],
    }
    [task] = hook.tasks()
    assert (task.title, task.requester, task.forge_issue, task.forge_url) == (
        "Fix the parser",
        "grace",
        7,
        "https://github.com/octo/demo/issues/7",
    )
    assert hook.deliveries() == [("d-1", "issues")]


def test_the_other_mutations_still_need_the_token(hook: Hook) -> None:
    # The exemption is the webhook's path only, not a way around the token for the rest.
    for path in ("/pause", "/tasks", "/webhooks/github/", "/webhooks/gitlab"):
        answer = hook.client.post(path, json={"repo": "demo", "title": "x"})
        assert answer.status_code == 401, (path, answer.text)
    with_token = hook.client.post("/pause", headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_token.status_code == 200


@pytest.mark.parametrize(
    "signature",
    [
        "sha256=" + "0" * 64,
        "sha1=whatever",
        "",
        None,
    ],
)
def test_a_bad_or_missing_signature_is_refused_and_nothing_done(
    hook: Hook, signature: str | None
) -> None:
    raw = json.dumps(issue_payload("opened")).encode()
    headers = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-bad"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    answer = hook.client.post("/webhooks/github", content=raw, headers=headers)
    assert answer.status_code == 401
    assert "signature" in answer.json()["error"]
    assert hook.tasks() == []
    assert hook.deliveries() == []


def test_a_delivery_signed_with_another_secret_or_altered_is_refused(hook: Hook) -> None:
    assert hook.send(issue_payload("opened"), secret="not-the-secret").status_code == 401
    raw = json.dumps(issue_payload("opened")).encode()
    good = sign_webhook(SECRET.encode(), raw)
    altered = raw.replace(b'"grace"', b'"mallory"', 1)
    assert hook.send(None, body=altered, signature=good).status_code == 401
    assert hook.tasks() == []


def test_the_same_delivery_twice_files_one_task(hook: Hook) -> None:
    first = hook.send(issue_payload("opened"), delivery="d-same")
    again = hook.send(issue_payload("opened"), delivery="d-same")
    assert first.status_code == 200
    assert again.status_code == 202
    assert again.json()["action"] == "duplicate"
    assert [t.key for t in hook.tasks()] == ["DEMO-1"]
    # Another delivery of the same issue (labeled after opened) is one task too.
    other = hook.send(issue_payload("labeled"), delivery="d-other")
    assert other.json()["action"] == "nothing"
    assert other.json()["task"] == "DEMO-1"
    assert [t.key for t in hook.tasks()] == ["DEMO-1"]


def test_unlabeled_or_closed_cancels_the_task(hook: Hook) -> None:
    hook.send(issue_payload("opened", 1))
    hook.send(issue_payload("opened", 2))
    unlabeled = hook.send(issue_payload("unlabeled", 1, labels=("bug",)))
    closed = hook.send(issue_payload("closed", 2, state="closed"))
    assert (unlabeled.status_code, unlabeled.json()["action"]) == (200, "cancel")
    assert (closed.status_code, closed.json()["action"]) == (200, "cancel")
    assert [(t.key, t.state) for t in hook.tasks()] == [
        ("DEMO-1", "cancelled"),
        ("DEMO-2", "cancelled"),
    ]
    with hook.engine.connect() as conn:
        last = queries.list_transitions(conn, hook.tasks()[1].id)[-1]
    assert (last.actor, last.reasons) == ("forge", ["cancelled by forge: issue #2 was closed"])


def test_an_issue_without_the_label_files_nothing(hook: Hook) -> None:
    answer = hook.send(issue_payload("opened", labels=("question",)))
    assert (answer.status_code, answer.json()["action"]) == (200, "nothing")
    assert hook.tasks() == []


def test_other_events_are_recorded_and_acknowledged(hook: Hook) -> None:
    payload = {"action": "completed", "repository": {"full_name": "octo/demo"}}
    answer = hook.send(payload, event="check_run", delivery="d-check")
    assert answer.status_code == 202
    assert answer.json()["action"] == "recorded"
    assert answer.json()["reasons"] == [
        "check_run event for demo: 0 task(s) waiting for a pull request woken"
    ]
    assert hook.deliveries() == [("d-check", "check_run")]
    # Issues of a forge repository no repo is: acknowledged, nothing filed.
    stranger = hook.send(issue_payload("opened", repo="someone/else"))
    assert (stranger.status_code, stranger.json()["action"]) == (202, "ignored")
    ping = hook.send({"zen": "Keep it logically awesome."}, event="ping")
    assert (ping.status_code, ping.json()["action"]) == (200, "pong")
    assert hook.tasks() == []


def test_a_check_or_review_event_wakes_the_repo_s_tasks_waiting_for_their_pull_request(
    hook: Hook,
) -> None:
    new = task_ops.add_task(hook.engine, hook.settings, "demo", "a task")
    later = time.time() + 3600
    with hook.engine.begin() as conn:
        queries.update_task(
            conn,
            new.task.id,
            now=time.time(),
            state="deferred",
            reasons=["deploy-staging: waiting 60s; nothing failed", "waiting for pull request #3"],
        )
        (job,) = queries.list_jobs(conn, task_id=new.task.id)
        conn.execute(
            sa.update(jobs_table).where(jobs_table.c.id == job.id).values(not_before=later)
        )
    payload = {"action": "completed", "repository": {"full_name": "octo/demo"}}
    answer = hook.send(payload, event="check_run")
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"] == "woken"
    with hook.engine.connect() as conn:
        (woken,) = queries.list_jobs(conn, task_id=new.task.id)
    assert woken.not_before < later
    # An event the landing does not read wakes nothing.
    with hook.engine.begin() as conn:
        conn.execute(
            sa.update(jobs_table).where(jobs_table.c.id == job.id).values(not_before=later)
        )
    label = {"action": "created", "repository": {"full_name": "octo/demo"}}
    assert hook.send(label, event="label").status_code == 202
    with hook.engine.connect() as conn:
        (still,) = queries.list_jobs(conn, task_id=new.task.id)
    assert still.not_before == later


def test_the_hook_gets_the_repo_and_the_delivery(hook: Hook) -> None:
    seen: list[tuple[str | None, str]] = []

    def landing(
        engine: sa.Engine, settings: Settings, repo: Any, delivery: webhooks.Delivery
    ) -> webhooks.WebhookOutcome:
        seen.append((repo.name if repo else None, delivery.payload["action"]))
        return webhooks.WebhookOutcome(True, "landed", ("merged",))

    delivery = webhooks.Delivery(
        "d-pr", "pull_request", {"action": "closed", "repository": {"full_name": "Octo/Demo"}}
    )
    outcome = webhooks.receive(hook.engine, hook.settings, delivery, hook=landing)
    assert outcome.action == "landed"
    assert seen == [("demo", "closed")]


def test_a_failure_gives_the_delivery_back_for_a_redelivery(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(task_ops, "add_task", broken)
    assert hook.send(issue_payload("opened"), delivery="d-retry").status_code == 500
    assert hook.deliveries() == []
    monkeypatch.undo()
    monkeypatch.setenv("ORCH_GITHUB_WEBHOOK_SECRET", SECRET)
    # GitHub's redelivery keeps the delivery id: it is acted on now.
    assert hook.send(issue_payload("opened"), delivery="d-retry").status_code == 200
    assert [t.key for t in hook.tasks()] == ["DEMO-1"]


def test_unreadable_signed_deliveries_are_refused(hook: Hook) -> None:
    assert hook.send(None, body=b"payload=%7B%7D").status_code == 422  # form-encoded
    assert hook.send(None, body=b"[1, 2]").status_code == 422
    no_issue = hook.send({"action": "opened", "repository": {"full_name": "octo/demo"}})
    assert no_issue.status_code == 422
    assert hook.send(issue_payload("opened"), delivery="bad id!").status_code == 422
    assert hook.send(issue_payload("opened"), event="Issues; drop").status_code == 422
    assert hook.tasks() == []
    assert hook.deliveries() == []


def test_without_a_secret_the_endpoint_is_off(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_GITHUB_WEBHOOK_SECRET")
    answer = hook.send(issue_payload("opened"), secret="")
    assert answer.status_code == 404
    assert "ORCH_GITHUB_WEBHOOK_SECRET" in answer.json()["error"]
    assert hook.tasks() == []


def test_the_secret_is_read_from_the_variable_the_setting_names(
    hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_HOOK_SECRET", "other-secret")
    settings = replace(hook.settings, github_webhook_secret_env="MY_HOOK_SECRET")
    client = hook.make_client(settings)
    assert hook.send(issue_payload("opened"), client=client).status_code == 401
    answer = hook.send(issue_payload("opened"), client=client, secret="other-secret")
    assert answer.status_code == 200


def test_a_body_over_the_webhook_cap_is_refused_before_it_is_read(hook: Hook) -> None:
    settings = replace(hook.settings, github_webhook_max_body_bytes=1024)
    client = hook.make_client(settings)
    big = issue_payload("opened", title="x" * 2000)
    answer = hook.send(big, client=client)
    assert answer.status_code == 413
    assert "ORCH_GITHUB_WEBHOOK_MAX_BODY_BYTES" in answer.json()["error"]
    # Chunked, without a Content-Length: cut off as it is read.
    raw = json.dumps(big).encode()
    chunked = client.post(
        "/webhooks/github",
        content=iter([raw[:600], raw[600:]]),
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": "d-chunked",
            "X-Hub-Signature-256": sign_webhook(SECRET.encode(), raw),
        },
    )
    assert chunked.status_code == 413
    assert hook.tasks() == []
    assert hook.send(issue_payload("opened"), client=client).status_code == 200


def test_claims_are_idempotent_in_one_transaction(hook: Hook) -> None:
    with hook.engine.begin() as conn:
        assert deliveries.claim_delivery(conn, "d-x", "issues", now=1.0)
        assert not deliveries.claim_delivery(conn, "d-x", "issues", now=2.0)
        assert deliveries.delivery_count(conn) == 1
