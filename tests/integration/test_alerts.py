"""Alerts: stored, then POSTed to a real webhook on 127.0.0.1; a dead webhook stalls nothing.

One alert per task and kind: a repeat counts an occurrence, the task moving on resolves it.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.integration.api_client import api_client
from tests.integration.test_engine import STAGES, Harness
from typer.testing import CliRunner

from orchestrator import alerts, task_ops, taskdir
from orchestrator.cli import app as cli_app
from orchestrator.config import load_settings
from orchestrator.store import alert_rows
from orchestrator.store.rows import AlertRow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Hook:
    """A webhook receiver on a free loopback port that answers with a chosen status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, object]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # poll_interval: how soon shutdown() returns (socketserver's default: 0.5 s).
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def _alert(engine: sa.Engine) -> AlertRow:
    with engine.begin() as conn:
        return alerts.raise_alert(
            conn,
            kind="infra-budget-exhausted",
            message="DEMO-1 block at testing",
            reasons=["testing: tool error timeout"],
            now=time.time(),
        ).alert


def test_delivered_as_slack_compatible_json(engine: sa.Engine, hook: Hook) -> None:
    alert = _alert(engine)
    assert alerts.deliver(engine, alert, hook.url)
    (body,) = hook.bodies
    assert body["text"] == "[critical] DEMO-1 block at testing\n- testing: tool error timeout"
    assert body["kind"] == "infra-budget-exhausted"
    with engine.connect() as conn:
        (row,) = alert_rows.list_alerts(conn)
    assert row.delivered_at is not None
    assert row.delivery_attempts == 1


def test_failing_webhook_is_retried_a_bounded_number_of_times(
    engine: sa.Engine, hook: Hook
) -> None:
    hook.status = 500
    alert = _alert(engine)
    assert not alerts.deliver(engine, alert, hook.url, attempts=3, backoff_s=0.01)
    assert len(hook.bodies) == 3
    with engine.connect() as conn:
        (row,) = alert_rows.list_alerts(conn)
    assert row.delivered_at is None
    assert row.delivery_attempts == 3


def test_webhook_down_never_raises_and_does_not_block_the_caller(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    alert = _alert(engine)
    url = _closed_port_url()
    assert not alerts.deliver(engine, alert, url, attempts=2, backoff_s=0.01)
    # In the background the caller returns at once; the thread finishes on its own. Its
    # first POST is held until the caller has returned, so the thread is surely still
    # under way then; its attempts are 0.01 s apart rather than the default 0.5 s, 1 s.
    release = threading.Event()
    real_post = alerts.post_webhook

    def held_post(url: str, body: dict[str, object], **kw: Any) -> str:
        release.wait(60)
        return real_post(url, body, **kw)

    monkeypatch.setattr(alerts, "post_webhook", held_post)
    monkeypatch.setattr(alerts, "deliver", functools.partial(alerts.deliver, backoff_s=0.01))
    before = set(threading.enumerate())
    try:
        alerts.deliver_in_background(engine, [alert], url)
        with engine.connect() as conn:
            assert alert_rows.list_alerts(conn)[0].delivered_at is None
        (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "alert-1"]
        assert thread.is_alive()
    finally:
        release.set()
    # Wait for it here: left running, it outlives this test's database.
    thread.join(timeout=60)
    assert not thread.is_alive()
    with engine.connect() as conn:
        (row,) = alert_rows.list_alerts(conn)
    assert row.delivered_at is None
    assert row.delivery_attempts == alerts.WEBHOOK_ATTEMPTS


def test_a_database_outage_does_not_stop_the_delivery(
    engine: sa.Engine, hook: Hook, tmp_path: Path
) -> None:
    alert = _alert(engine)
    # Every connection fails: a database that cannot be reached at that moment.
    gone = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'orch.db'}")
    hook.status = 500
    assert not alerts.deliver(gone, alert, hook.url, attempts=2, backoff_s=0.01)
    assert len(hook.bodies) == 2  # retried although neither attempt could be recorded
    hook.status = 200
    assert alerts.deliver(gone, alert, hook.url, attempts=2, backoff_s=0.01)
    assert len(hook.bodies) == 3


# ---- one alert per task and kind: repeats count, the task moving on resolves -------------


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


def _raise(h: Harness, key: str, *, kind: str = "task-blocked", **kw: Any) -> alerts.Raised:
    task = h.task(key)
    values: dict[str, Any] = {"message": f"{key} blocked", "reasons": ["why"], "now": 10.0}
    values.update(kw)
    with h.engine.begin() as conn:
        return alerts.raise_alert(conn, kind=kind, task_id=task.id, **values)


def _open(h: Harness) -> list[AlertRow]:
    return [a for a in h.alerts() if a.resolved_at is None]


def _join_deliveries() -> None:
    # Left running, a delivery thread outlives the test's database.
    for thread in threading.enumerate():
        if thread.name.startswith("alert-"):
            thread.join(60)


def test_raised_again_while_open_counts_one_more_occurrence(h: Harness) -> None:
    h.add_repo()
    key = h.add_task()
    first = _raise(h, key, message="first", reasons=["one"], now=10.0)
    again = _raise(h, key, message="again", reasons=["two"], now=20.0)
    assert first.new
    assert not again.new  # delivered already: the worker does not send it twice
    assert again.alert.id == first.alert.id
    assert (again.alert.occurrences, again.alert.message, again.alert.reasons) == (
        2,
        "again",
        ["two"],
    )
    assert again.alert.created_at == 10.0  # first seen
    # Another kind is another alert; so is every alert of no task.
    assert _raise(h, key, kind="awaiting-human").new
    with h.engine.begin() as conn:
        for _ in range(2):
            alerts.raise_alert(conn, kind="note", message="m", reasons=[], now=1.0)
    assert sorted(a.kind for a in h.alerts()) == ["awaiting-human", "note", "note", "task-blocked"]


def test_resolved_alert_reopens_when_raised_again(h: Harness) -> None:
    h.add_repo()
    key = h.add_task()
    first = _raise(h, key).alert
    task_id = h.task(key).id
    with h.engine.begin() as conn:
        alert_rows.update_alert(conn, first.id, delivered_at=11.0, delivery_attempts=1)
        assert alerts.resolve_task_alerts(conn, task_id, 12.0, kinds=["other"]) == []
        assert alerts.resolve_task_alerts(conn, task_id, 12.0) == [first.id]
        assert alerts.resolve_task_alerts(conn, task_id, 13.0) == []
        assert alert_rows.list_alerts(conn, open_only=True) == []
    (row,) = h.alerts()
    assert row.resolved_at == 12.0
    back = _raise(h, key, message="back", now=30.0)
    assert back.new  # news to whoever resolved it: delivered again
    (row,) = h.alerts()
    assert (row.id, row.occurrences, row.message) == (first.id, 2, "back")
    assert (row.resolved_at, row.delivered_at, row.delivery_attempts) == (None, None, 0)


def test_a_retried_task_that_blocks_again_has_one_open_alert(h: Harness, hook: Hook) -> None:
    h.settings = load_settings(
        **{**asdict(h.settings), "developer_retry_budget": 0, "alert_webhook_url": hook.url}
    )
    h.plan = {"*:testing:*": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    assert h.task(key).state == "blocked"
    (alert,) = h.alerts()
    first_testing = [j for j in h.jobs(key) if j.stage == "testing"][-1]
    log = taskdir.run_log_path(h.folder(key), first_testing.id, "testing", first_testing.agent)
    assert log.exists()
    assert alert.reasons[-1] == f"log: {log}"
    assert alert.reasons[:-1] == h.task(key).reasons  # the decision's reasons

    task_ops.retry_task(h.engine, h.settings, key)
    (alert,) = h.alerts()
    assert alert.resolved_at is not None
    h.run_until_idle()
    assert h.task(key).state == "blocked"

    (alert,) = h.alerts()  # not stacked: the one alert, open again
    assert (alert.kind, alert.resolved_at, alert.occurrences) == (
        "developer-budget-exhausted",
        None,
        2,
    )
    second_testing = [j for j in h.jobs(key) if j.stage == "testing"][-1]
    assert second_testing.id != first_testing.id
    second_log = taskdir.run_log_path(
        h.folder(key), second_testing.id, "testing", second_testing.agent
    )
    assert alert.reasons[-1] == f"log: {second_log}"
    # Both times a human had to hear it: the first raise, and the reopening after the retry.
    h.wait_for(lambda: len(hook.bodies) == 2)
    _join_deliveries()
    assert [b["occurrences"] for b in hook.bodies] == [1, 2]
    assert {b["alert_id"] for b in hook.bodies} == {alert.id}


def test_approve_cancel_and_done_resolve(h: Harness, tmp_path: Path) -> None:
    h.add_repo(STAGES, deploy_staging="manual")
    approved, cancelled = h.add_task("approved"), h.add_task("cancelled")
    h.run_until_idle()
    assert [h.task(k).state for k in (approved, cancelled)] == ["blocked", "blocked"]
    assert sorted(a.kind for a in _open(h)) == ["awaiting-human", "awaiting-human"]

    task_ops.approve_task(
        h.engine, h.settings, approved, artifact=b"---\nstaging_status: PASSED\n---\n"
    )
    task_ops.cancel_task(h.engine, cancelled, reason="not needed")
    assert _open(h) == []
    assert all(a.resolved_at is not None for a in h.alerts())

    # Done resolves too: an alert still open when the task finishes is closed with it.
    note = _raise(h, approved, kind="note").alert
    h.run_until_idle()
    assert h.task(approved).state == "done"
    (row,) = [a for a in h.alerts() if a.id == note.id]
    assert row.resolved_at is not None
    assert _open(h) == []


def test_listings_show_open_alerts_and_all_on_request(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.add_repo()
    key, other = h.add_task(), h.add_task()
    _raise(h, key, now=10.0)
    _raise(h, key, now=11.0)
    closed = _raise(h, other, kind="awaiting-human", now=12.0).alert
    other_id = h.task(other).id
    with h.engine.begin() as conn:
        alerts.resolve_task_alerts(conn, other_id, 13.0)

    client = api_client(h.settings, h.engine)
    shown = client.get("/alerts").json()
    assert [(a["task"], a["kind"], a["occurrences"]) for a in shown] == [(key, "task-blocked", 2)]
    assert shown[0]["resolved_at"] is None
    every = client.get("/alerts", params={"all": "true"}).json()
    assert [(a["task"], a["resolved_at"]) for a in every] == [(other, 13.0), (key, None)]
    assert every[0]["id"] == closed.id
    page = client.get("/").text
    assert 'data-kind="task-blocked" data-occurrences="2"' in page
    assert "awaiting-human" not in page
    client.close()

    monkeypatch.setenv("ORCH_HOME", str(h.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", h.settings.database_url)
    cli = json.loads(CliRunner().invoke(cli_app, ["alerts", "--json"]).stdout)
    assert cli == shown
    cli_all = json.loads(CliRunner().invoke(cli_app, ["alerts", "--json", "--all"]).stdout)
    assert cli_all == every
    table = CliRunner().invoke(cli_app, ["alerts"], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert key in table.output
    assert other not in table.output
