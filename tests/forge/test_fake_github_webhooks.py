"""The fake's webhooks: each change a test control makes is POSTed as GitHub would,
signed so that ``forge.base.verify_webhook`` accepts it, and can be sent again with the
same delivery id (what a receiver de-duplicates by)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.forge.base import verify_webhook
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.github import GitHubForge

SECRET = b"webhook-secret"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    got: list[Received] = field(default_factory=list)
    answer: int = 200

    def events(self) -> list[tuple[str, str]]:
        import json

        return [
            (r.headers["x-github-event"], json.loads(r.body).get("action") or "") for r in self.got
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec = holder[0]
            rec.got.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks"))
    # poll_interval: how soon shutdown() returns (socketserver's default: 0.5 s).
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


def test_a_delivery_is_signed_and_verifiable(
    fake: FakeGitHub, repo: str, receiver: Receiver
) -> None:
    fake.set_webhook(receiver.url, SECRET)
    number = fake.open_issue(repo, "Bug", labels=["orch"], author="alice")
    (got,) = receiver.got
    assert got.headers["x-github-event"] == "issues"
    assert uuid.UUID(got.headers["x-github-delivery"])
    assert got.headers["content-type"] == "application/json"
    signature = got.headers["x-hub-signature-256"]
    assert verify_webhook(SECRET, got.body, signature)
    assert not verify_webhook(b"another secret", got.body, signature)
    assert not verify_webhook(SECRET, got.body + b" ", signature)
    delivery = fake.deliveries[-1]
    assert (delivery.id, delivery.status) == (got.headers["x-github-delivery"], 200)
    assert delivery.payload["issue"]["number"] == number
    assert delivery.payload["sender"]["login"] == "alice"


def test_each_change_sends_its_event(
    fake: FakeGitHub, repo: str, receiver: Receiver, forge: GitHubForge
) -> None:
    fake.set_webhook(receiver.url, SECRET)
    issue = fake.open_issue(repo, "Bug")
    fake.add_label(repo, issue, "orch")
    fake.remove_label(repo, issue, "orch")
    head = fake.push_commit(repo, "topic", {"t.py": "t = 1\n"})
    pull = forge.open_pull(head="topic", base="main", title="t", body="")
    fake.set_status(repo, head, "lint", "success")
    fake.set_check_run(repo, head, "tests", status="in_progress")
    fake.set_check_run(repo, head, "tests", conclusion="success")
    fake.submit_review(repo, pull.number, "APPROVED")
    assert forge.merge(pull.number, sha=head, method="squash").merged
    forge.close_issue(issue)

    assert receiver.events() == [
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issues", "unlabeled"),
        ("pull_request", "opened"),
        ("status", ""),
        ("check_run", "created"),
        ("check_run", "completed"),
        ("pull_request_review", "submitted"),
        ("pull_request", "closed"),
        ("issues", "closed"),
    ]
    closed = fake.deliveries[-2].payload
    assert closed["pull_request"]["merged"] is True
    assert all(
        verify_webhook(SECRET, r.body, r.headers["x-hub-signature-256"]) for r in receiver.got
    )


def test_a_redelivery_has_the_same_id_and_body(
    fake: FakeGitHub, repo: str, receiver: Receiver
) -> None:
    fake.set_webhook(receiver.url, SECRET)
    fake.open_issue(repo, "Once")
    first = fake.deliveries[-1]
    again = fake.redeliver(first.id)
    assert again is first
    one, two = receiver.got
    assert one.headers["x-github-delivery"] == two.headers["x-github-delivery"] == first.id
    assert one.body == two.body
    assert first.statuses == [200, 200]


def test_a_receiver_that_fails_or_is_gone_is_recorded_not_raised(
    fake: FakeGitHub, repo: str, receiver: Receiver
) -> None:
    fake.set_webhook(receiver.url, SECRET)
    receiver.answer = 500
    fake.open_issue(repo, "Refused")
    assert fake.deliveries[-1].status == 500
    fake.set_webhook("http://127.0.0.1:9/gone", SECRET)
    fake.open_issue(repo, "Unreachable")
    gone = fake.deliveries[-1]
    assert gone.status is None
    assert gone.errors


def test_without_a_secret_nothing_is_signed(
    fake: FakeGitHub, repo: str, receiver: Receiver
) -> None:
    fake.set_webhook(receiver.url)
    fake.open_issue(repo, "Unsigned")
    assert "x-hub-signature-256" not in receiver.got[-1].headers
