"""The dashboard, ``GET /status`` and ``orch status`` tell the same truth.

About the scheduler: running in this process, paused (by ``orch pause``, the database's
switch, or by the setting ORCH_PAUSED, each named), or not running in this process
(``orch serve --no-scheduler``). About alerts: one definition of an open alert, so every
count of them agrees with the list beside it. And the board and ``/tasks`` come in pages.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.integration.test_api import Env
from typer.testing import CliRunner

from orchestrator.cli import app as cli_app
from orchestrator.store import alert_rows, control

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def env(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: Callable[..., Path]
) -> Iterator[Env]:
    e = Env(tmp_path, migrated_db_url, engine, make_repo())
    yield e
    e.client.close()


def _switches(html: str) -> str:
    """The board's line about the scheduler, as text."""
    line = html.split('<p class="switches"', 1)[1].split("</p>", 1)[0]
    return " ".join(re.sub(r"<[^>]+>", " ", line.split(">", 1)[1]).split())


def _heartbeat(env: Env, worker: str = "w1") -> None:
    with env.engine.begin() as conn:
        control.worker_heartbeat(
            conn, worker, name="run", host="h", pid=1, started_at=time.time(), now=time.time()
        )


def _orch(env: Env, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("ORCH_HOME", str(env.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", env.db_url)
    result = CliRunner().invoke(cli_app, ["status", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.stdout)


# ---- the scheduler -----------------------------------------------------------------------


def test_no_scheduler_in_this_process_is_not_called_running(env: Env) -> None:
    # env.client's app was made as `orch serve --no-scheduler` makes it: scheduler=False.
    line = _switches(env.client.get("/").text)
    assert "running" not in line.replace("not running", "")
    assert "not running in this process" in line
    status = env.client.get("/status").json()
    assert status["scheduler"] is False
    assert status["scheduler_state"]["state"] == "not-running"
    assert status["scheduler_state"]["in_this_process"] is False


def test_a_scheduler_here_is_running_until_paused_and_says_by_what(env: Env) -> None:
    client = env.make_client(env.settings, scheduler=True)
    assert _switches(client.get("/").text).startswith("running")
    assert client.get("/status").json()["scheduler_state"]["state"] == "running"

    client.post("/pause")
    line = _switches(client.get("/").text)
    assert line.startswith("PAUSED")
    assert "by `orch pause`" in line
    state = client.get("/status").json()["scheduler_state"]
    assert (state["state"], state["paused_by"]) == ("paused", ["orch pause"])
    client.post("/resume")

    by_setting = env.make_client(env.make_settings(paused=True), scheduler=True)
    line = _switches(by_setting.get("/").text)
    assert "by ORCH_PAUSED" in line
    assert "orch pause" not in line
    state = by_setting.get("/status").json()["scheduler_state"]
    assert (state["state"], state["paused_by"]) == ("paused", ["ORCH_PAUSED"])


def test_orch_status_says_whether_any_scheduler_runs(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker has a heartbeat: nothing runs jobs, whatever the switch says.
    assert "running" not in _orch(env, monkeypatch).splitlines()[0].replace("not running", "")
    data = json.loads(_orch(env, monkeypatch, "--json"))
    assert data["scheduler"]["state"] == "not-running"
    assert data["paused"] is False

    _heartbeat(env)
    assert json.loads(_orch(env, monkeypatch, "--json"))["scheduler"]["state"] == "running"
    first = _orch(env, monkeypatch).splitlines()[0]
    assert "running (1 worker" in first

    env.client.post("/pause")
    data = json.loads(_orch(env, monkeypatch, "--json"))
    assert data["paused"] is True
    assert (data["scheduler"]["state"], data["scheduler"]["paused_by"]) == (
        "paused",
        ["orch pause"],
    )
    assert "PAUSED by `orch pause`" in _orch(env, monkeypatch).splitlines()[0]


# ---- alerts ------------------------------------------------------------------------------


def _alerts(env: Env, n: int, *, resolved: int = 0) -> None:
    now = time.time()
    with env.engine.begin() as conn:
        for i in range(n + resolved):
            row = alert_rows.insert_alert(
                conn,
                kind="task-blocked",
                severity="warning",
                message=f"alert {i}",
                reasons=["bench"],
                now=now + i,
            )
            if i >= n:
                alert_rows.update_alert(conn, row.id, resolved_at=now + i)


def test_every_count_of_open_alerts_agrees_with_the_list(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _alerts(env, 4, resolved=2)
    html = env.client.get("/").text
    listed = html.split('id="alerts"', 1)[1].split("</section>", 1)[0].count("<li ")
    assert listed == 4
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    counts = [int(n) for n in re.findall(r"alerts:? (\d+)", text)]
    assert counts, text
    assert set(counts) == {4}, text
    assert env.client.get("/status").json()["alerts"] == 4
    assert json.loads(_orch(env, monkeypatch, "--json"))["alerts"] == 4
    assert "alerts: 4" in _orch(env, monkeypatch)


def test_open_alerts_past_the_panel_are_counted_not_cut(env: Env) -> None:
    _alerts(env, 12)
    html = env.client.get("/").text
    panel = html.split('id="alerts"', 1)[1].split("</section>", 1)[0]
    assert panel.count("<li ") == 10
    assert "open alerts 12" in " ".join(re.sub(r"<[^>]+>", " ", panel).split())
    assert env.client.get("/status").json()["alerts"] == 12


# ---- pages -------------------------------------------------------------------------------


def _keys(env: Env, n: int) -> list[str]:
    return [env.add(f"t{i}") for i in range(n)]


def test_tasks_come_in_pages_with_a_link_to_the_next(env: Env) -> None:
    keys = _keys(env, 5)
    r = env.client.get("/tasks", params={"limit": 2})
    assert [t["key"] for t in r.json()] == keys[:2]
    assert r.headers["x-total-count"] == "5"
    seen: list[str] = []
    url: str | None = "/tasks?limit=2"
    while url is not None:
        r = env.client.get(url)
        seen += [t["key"] for t in r.json()]
        found = re.search(r'<([^>]+)>; rel="next"', r.headers.get("link", ""))
        url = found.group(1) if found else None
    assert seen == keys
    filtered = env.client.get("/tasks", params={"limit": 1, "state": "active"})
    assert "state=active" in filtered.headers["link"]


def test_tasks_default_to_a_page_not_the_whole_history(env: Env) -> None:
    _keys(env, 3)
    r = env.client.get("/tasks")
    assert r.headers["x-total-count"] == "3"
    assert 'rel="next"' not in r.headers.get("link", "")


def test_the_board_pages_its_columns(env: Env) -> None:
    keys = _keys(env, 5)
    html = env.client.get("/", params={"limit": 2}).text
    column = html.split('id="column-development"', 1)[1].split("</section>", 1)[0]
    assert column.count('class="card ') == 2
    # Newest moved first: the two added last.
    assert f'id="card-{keys[4]}"' in column
    assert f'id="card-{keys[3]}"' in column
    nxt = re.search(r'<a class="next" href="([^"]+)"', html)
    assert nxt is not None, html
    href = nxt.group(1).replace("&amp;", "&")
    page2 = env.client.get(href).text
    column2 = page2.split('id="column-development"', 1)[1].split("</section>", 1)[0]
    assert f'id="card-{keys[2]}"' in column2
    assert f'id="card-{keys[4]}"' not in column2
    assert re.search(r'<a class="prev" href="[^"]+"', page2)
    # The fragment the page polls keeps the page it is on.
    assert f'hx-get="/ui/board?{href.split("?", 1)[1]}"'.replace("&", "&amp;") in page2
