"""Model-API faults across tasks, with the REAL pinned claude CLI and a model server on
127.0.0.1: an outage pauses the backend and nobody's retry budget pays for it; rejected
credentials pause it at once with one alert; a refused request blocks its task with the
server's words. Issue 16: each task burned its own infra retries against the same outage
and blocked with an alert of its own; 401 and 400 were retried like a 5xx.

The server answers each claude conversation from the conversation itself (the prompt names
the workspace and the artifact path), so several tasks can run at once against one server;
while ``fault`` is set, every agent request gets that answer instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fake_model_server as F
import pytest
import sqlalchemy as sa
from agent_server import AgentServer
from test_llm_backends import TEST_KEY, Job, cli, make_job, offline_env

from orchestrator import backend_ops, repo_ops, task_ops
from orchestrator.engine.worker import Worker
from orchestrator.store import alert_rows, breakers, queries
from orchestrator.store.rows import TaskRow

__all__ = ["make_job", "offline_env"]  # fixtures this module uses, imported by name

# The longest a test waits for the engine before it gives up (a bound, not a measurement).
DEADLINE_S = 60.0


@pytest.fixture
def fleet(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[Job, AgentServer, list[str]]]]:
    """``n`` tasks of one repo whose developer is ``backend`` (claude or codex), against one
    AgentServer."""
    servers: list[AgentServer] = []

    def _make(
        n: int, backend: str = "claude", **overrides: Any
    ) -> tuple[Job, AgentServer, list[str]]:
        import sys

        server = AgentServer().start()
        servers.append(server)
        if backend == "claude":
            names = ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
            monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
            command = {"claude_command": str(cli("claude"))}
        else:
            names = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]
            monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
            monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
            command = {"codex_command": str(cli("codex"))}
        values: dict[str, Any] = dict(
            **command,
            max_parallel_jobs=n,
            max_parallel_jobs_per_repo=n,
            infra_retry_backoff_s=0.2,
            backend_probe_first_s=0.5,
            backend_breaker_threshold=3,
            poll_interval_s=0.2,
        )
        values.update(overrides)
        job = make_job(names, agents=(f"development={backend}",), **values)
        repo_ops.set_repo(
            job.engine,
            "demo",
            repo_ops.RepoInput(
                test_cmd=f"{sys.executable} -c pass",
                stages=["development", "testing", "deploy-staging"],
            ),
        )
        keys = [job.task.key]
        for i in range(1, n):
            keys.append(
                task_ops.add_task(job.engine, job.settings, "demo", f"Task {i}", "Do.").task.key
            )
        return job, server, keys

    yield _make
    for server in servers:
        server.stop()


def _tasks(engine: sa.Engine, keys: list[str]) -> list[TaskRow]:
    with engine.connect() as conn:
        found = [queries.get_task(conn, k) for k in keys]
    assert all(t is not None for t in found)
    return [t for t in found if t is not None]


def _health(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        rows = breakers.list_backends(conn)
    # One backend per test: whichever ran.
    return rows[0].state.health.value if rows else None


def _story(engine: sa.Engine, keys: list[str]) -> list[Any]:
    """What happened, for a failure's message."""
    with engine.connect() as conn:
        return [
            (
                t.key,
                t.state,
                t.reasons,
                [
                    (j.id, j.state, j.not_before, j.reasons)
                    for j in queries.list_jobs(conn, task_id=t.id)
                ],
            )
            for t in _tasks(engine, keys)
        ] + [breakers.list_backends(conn)]


def _run_until(worker: Worker, done: Callable[[], bool]) -> bool:
    """Run ``worker`` in a thread until ``done()``; whether it came true in time."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    ok = False
    while time.monotonic() < deadline:
        if done():
            ok = True
            break
        time.sleep(0.1)
    worker.stop(drain=True)
    thread.join(60)
    return ok


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_an_outage_pauses_the_backend_and_every_task_finishes(
    fleet: Callable[..., tuple[Job, AgentServer, list[str]]], backend: str
) -> None:
    job, server, keys = fleet(3, backend)
    server.fault = F.http_error(529, "scripted outage: Overloaded")
    engine = job.engine
    seen: dict[str, Any] = {}

    def watch() -> bool:
        if "open" not in seen and _health(engine) == "open":
            seen["open"] = _tasks(engine, keys)
            with engine.connect() as conn:
                seen["alerts_while_open"] = [a.kind for a in alert_rows.list_alerts(conn)]
            # The outage ends.
            server.fault = None
        tasks = _tasks(engine, keys)
        return "open" in seen and all(t.state == "done" for t in tasks)

    assert _run_until(Worker(job.settings, engine), watch), [
        (t.key, t.state, t.reasons) for t in _tasks(engine, keys)
    ]

    # While it was open: nobody blocked, and the tasks spent at most the faults before the
    # breaker opened (threshold 3: two of them), not a budget each.
    assert all(t.state in ("active", "deferred") for t in seen["open"])
    assert sum(t.infra_retries for t in seen["open"]) <= 2
    assert seen["alerts_while_open"] == ["backend-outage"]
    # Afterwards: all three done, one alert for the outage and one for its end, and no task
    # alert at all; no developer retry was spent on it.
    tasks = _tasks(engine, keys)
    assert all(t.developer_retries == 0 for t in tasks)
    with engine.connect() as conn:
        alerts = alert_rows.list_alerts(conn)
        history = [h for t in tasks for h in queries.list_transitions(conn, t.id)]
    assert sorted(a.kind for a in alerts) == ["backend-outage", "backend-recovered"]
    outage = next(a for a in alerts if a.kind == "backend-outage")
    assert outage.resolved_at is not None
    assert _health(engine) == "closed"
    waits = [h for h in history if any("waiting for the model backend" in r for r in h.reasons)]
    assert waits, "no task waited for the backend"
    assert not any(h.kind == "block" for h in history)


@pytest.mark.parametrize("backend", ["claude", "codex"])
def test_rejected_credentials_pause_the_backend_with_one_alert(
    fleet: Callable[..., tuple[Job, AgentServer, list[str]]], backend: str
) -> None:
    job, server, keys = fleet(2, backend, backend_probe_max_s=3600.0)
    server.fault = F.http_error(401, "scripted: invalid x-api-key")
    engine = job.engine

    def paused_and_waiting() -> bool:
        if _health(engine) != "credentials":
            return False
        with engine.connect() as conn:
            running = [
                j for t in _tasks(engine, keys) for j in queries.list_jobs(conn, task_id=t.id)
            ]
        return not any(j.state == "running" for j in running)

    assert _run_until(Worker(job.settings, engine), paused_and_waiting)
    tasks = _tasks(engine, keys)
    with engine.connect() as conn:
        alerts = alert_rows.list_alerts(conn)
    assert [a.kind for a in alerts] == ["backend-credentials"]
    assert f"credentials rejected for {backend}" in alerts[0].message
    # The CLI words a 401 its own way (claude: "Invalid API key"); the status is the server's.
    assert any("HTTP 401" in r for r in alerts[0].reasons), alerts[0].reasons
    # Not retried: both tasks' developers asked the model at most once between them before
    # the pause (two in parallel may both have been on their way), and nobody is blocked
    # or charged.
    assert server.faults_sent <= 2
    assert all(t.state in ("active", "deferred") for t in tasks)
    assert all(t.infra_retries == 0 and t.developer_retries == 0 for t in tasks)

    # The operator fixes the key and resumes the backend: the probe gets through, and both
    # tasks go on to the end.
    server.fault = None
    backend_ops.resume_backend(engine, backend)
    assert _run_until(
        Worker(job.settings, engine), lambda: all(t.state == "done" for t in _tasks(engine, keys))
    ), _story(engine, keys)
    with engine.connect() as conn:
        kinds = sorted(a.kind for a in alert_rows.list_alerts(conn))
    assert kinds == ["backend-credentials", "backend-recovered"]


def test_a_refused_request_blocks_its_task_with_the_server_message(
    fleet: Callable[..., tuple[Job, AgentServer, list[str]]],
) -> None:
    job, server, keys = fleet(1)
    server.fault = F.http_error(400, "scripted: tools.3.name: String should match pattern")
    engine = job.engine
    assert _run_until(
        Worker(job.settings, engine), lambda: _tasks(engine, keys)[0].state == "blocked"
    )
    (task,) = _tasks(engine, keys)
    assert task.stage == "development"
    assert any("refused the request" in r for r in task.reasons), task.reasons
    assert any("tools.3.name: String should match" in r for r in task.reasons), task.reasons
    assert (task.developer_retries, task.infra_retries) == (0, 0)
    with engine.connect() as conn:
        # One job: not deferred and tried again (claude itself may re-send the request in
        # another form within that job).
        assert len(queries.list_jobs(conn, task_id=task.id)) == 1
        assert [a.kind for a in alert_rows.list_alerts(conn)] == ["model-request-refused"]
    # The backend itself is fine: a refused request is no outage.
    assert _health(engine) == "closed"


def test_parallel_jobs_cannot_jointly_overshoot_the_day_budget(
    fleet: Callable[..., tuple[Job, AgentServer, list[str]]],
) -> None:
    # Two tasks, each a developer in an endless tool loop, at once. The day budget is one
    # and a half task budgets: the first job reserves a task budget, the second the half
    # left. Issue 16: both passed the day check at dispatch and spent on together.
    task_budget, day_budget = 0.01, 0.015
    job, server, keys = fleet(
        2, llm_budget_per_task_usd=task_budget, llm_budget_per_day_usd=day_budget
    )
    server.loop = True
    engine = job.engine
    assert _run_until(
        Worker(job.settings, engine),
        lambda: all(t.state == "blocked" for t in _tasks(engine, keys)),
    ), _story(engine, keys)
    tasks = _tasks(engine, keys)
    with engine.connect() as conn:
        jobs = [j for t in tasks for j in queries.list_jobs(conn, task_id=t.id)]
        alerts = alert_rows.list_alerts(conn)
    dev = [j for j in jobs if j.stage == "development" and j.cost_usd is not None]
    assert len(dev) == 2, [(j.id, j.state, j.cost_usd, j.reasons) for j in jobs]
    spent = sum(j.cost_usd or 0.0 for j in dev)
    # What one model call of this loop costs at the configured prices: each job may run
    # over its cap by the call it made between two looks of the meter (one; three allowed).
    st = job.settings
    per_call = (100 * st.claude_price_in_per_mtok_usd + 20 * st.claude_price_out_per_mtok_usd) / 1e6
    assert spent <= day_budget + 2 * 3 * per_call, (spent, [j.cost_usd for j in dev])
    # Each job was stopped near its own reservation, not at the timeout.
    assert all(t.state == "blocked" for t in tasks)
    assert {a.kind for a in alerts} == {"llm-budget-exhausted"}
