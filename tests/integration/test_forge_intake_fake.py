"""Intake against the fake GitHub: issues by label through the real client, and GitHub's own
webhook deliveries (signed by the fake) through the real endpoint.

The fake sends its deliveries over HTTP to a small receiver on 127.0.0.1 that hands each
request, headers and body as sent, to the API app; so the signature checked is the one the
fake computed, and a delivery signed with another secret is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orchestrator import intake, repo_ops
from orchestrator.api import create_app
from orchestrator.config import load_settings
from orchestrator.forge.fake_github import FakeGitHub
from orchestrator.forge.settings import ForgeInput
from orchestrator.store import queries
from orchestrator.store.rows import TaskRow

REPO = "acme/app"
SECRET = "hook-secret"


class Bed:
    def __init__(self, tmp_path: Path, engine: sa.Engine, db_url: str, repo: Path) -> None:
        self.fake = FakeGitHub(tmp_path / "fake").start()
        self.fake.create_repo(REPO, files={"README.md": "# app\n"})
        self.engine = engine
        self.settings = load_settings(
            home=tmp_path / "home", database_url=db_url, api_token="t" * 32
        )
        repo_ops.add_repo(
            engine,
            "app",
            repo,
            repo_ops.RepoInput(
                stages=["development", "testing", "deploy-staging"],
                forge=ForgeInput(forge="github", repo=REPO, api_url=self.fake.url),
            ),
        )
        self.env = {"GITHUB_TOKEN": self.fake.token}

    def poll(self) -> None:
        (report,) = intake.poll_intake(self.engine, self.settings, environ=self.env)
        assert not report.problems, report

    def tasks(self) -> list[TaskRow]:
        with self.engine.connect() as conn:
            return queries.list_tasks(conn)


@pytest.fixture
def bed(tmp_path: Path, engine: sa.Engine, migrated_db_url: str, make_repo: Any) -> Iterator[Bed]:
    b = Bed(tmp_path, engine, migrated_db_url, make_repo())
    yield b
    b.fake.close()


def test_issues_by_label_become_tasks_once_and_an_unlabeled_one_is_cancelled(bed: Bed) -> None:
    wanted = bed.fake.open_issue(REPO, "Add a greeting", body="Say hello.", labels=["orch"])
    bed.fake.open_issue(REPO, "Not for the robot", labels=["question"])
    bed.poll()
    bed.poll()  # filed once
    (task,) = bed.tasks()
    assert (task.title, task.forge_issue, task.requester) == ("Add a greeting", wanted, "octocat")
    assert task.forge_url == f"{bed.fake.url}/{REPO}/issues/{wanted}"
    bed.fake.remove_label(REPO, wanted, "orch")
    bed.poll()
    (task,) = bed.tasks()
    assert task.state == "cancelled"


class _Relay(BaseHTTPRequestHandler):
    """Hands each delivery, as sent, to the API app."""

    client: TestClient

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = self.client.post("/webhooks/github", content=body, headers=headers)
        self.send_response(answer.status_code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def relay(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ORCH_GITHUB_WEBHOOK_SECRET", SECRET)
    app = create_app(bed.settings, bed.engine)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        handler = type("Relay", (_Relay,), {"client": client})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # poll_interval: how soon shutdown() returns (socketserver's default: 0.5 s).
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/hook"
        finally:
            server.shutdown()
            server.server_close()


def test_github_s_signed_delivery_files_the_task_and_a_forged_one_is_refused(
    bed: Bed, relay: str
) -> None:
    bed.fake.set_webhook(relay, "not-the-secret")
    bed.fake.open_issue(REPO, "Forged", labels=["orch"])
    assert bed.fake.deliveries[-1].statuses == [401]
    assert bed.tasks() == []
    bed.fake.set_webhook(relay, SECRET)
    number = bed.fake.open_issue(REPO, "Add a greeting", labels=["orch"])
    delivery = bed.fake.deliveries[-1]
    assert delivery.statuses == [200]
    (task,) = bed.tasks()
    assert task.forge_issue == number
    # GitHub's redelivery of the same delivery files nothing more.
    bed.fake.redeliver(delivery.id)
    assert len(bed.tasks()) == 1
    bed.fake.close_issue(REPO, number)
    (task,) = bed.tasks()
    assert task.state == "cancelled"
