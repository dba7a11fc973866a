"""Alerts: stored, then POSTed to a real webhook on 127.0.0.1; a dead webhook stalls nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import alerts
from orchestrator.store import queries


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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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


def _alert(engine: sa.Engine) -> queries.AlertRow:
    with engine.begin() as conn:
        return alerts.raise_alert(
            conn,
            kind="infra-budget-exhausted",
            message="DEMO-1 block at testing",
            reasons=["testing: tool error timeout"],
            now=time.time(),
        )


def test_delivered_as_slack_compatible_json(engine: sa.Engine, hook: Hook) -> None:
    alert = _alert(engine)
    assert alerts.deliver(engine, alert, hook.url)
    (body,) = hook.bodies
    assert body["text"] == "[critical] DEMO-1 block at testing\n- testing: tool error timeout"
    assert body["kind"] == "infra-budget-exhausted"
    with engine.connect() as conn:
        (row,) = queries.list_alerts(conn)
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
        (row,) = queries.list_alerts(conn)
    assert row.delivered_at is None
    assert row.delivery_attempts == 3


def test_webhook_down_never_raises_and_does_not_block_the_caller(engine: sa.Engine) -> None:
    alert = _alert(engine)
    url = _closed_port_url()
    assert not alerts.deliver(engine, alert, url, attempts=2, backoff_s=0.01)
    # In the background the caller returns at once; the thread finishes on its own.
    before = set(threading.enumerate())
    alerts.deliver_in_background(engine, [alert], url)
    with engine.connect() as conn:
        assert queries.list_alerts(conn)[0].delivered_at is None
    # Wait for it here: left running, it outlives this test's database.
    (thread,) = [t for t in threading.enumerate() if t not in before and t.name == "alert-1"]
    thread.join(timeout=60)
    assert not thread.is_alive()


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
