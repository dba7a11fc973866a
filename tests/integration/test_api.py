"""The HTTP API and dashboard in-process (FastAPI's TestClient) on a real database.

Breadth: every endpoint's shape, errors as JSON, auth, path checks, metrics, the dashboard's
escaping. A real server process is tested in tests/acceptance/test_api_server.py.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.api_client import basic
from typer.testing import CliRunner

from orchestrator import repo_ops, task_ops, taskdir
from orchestrator.api import create_app, files, reads
from orchestrator.api.guard import Policy, decide
from orchestrator.api.token import dashboard_link, load_token, login_code
from orchestrator.api.totals import Folded
from orchestrator.cli import app as cli_app
from orchestrator.config import Settings, load_settings
from orchestrator.errors import ConfigError
from orchestrator.store import alert_rows, control, make_engine, merges, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow, TaskRow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "t0ps3cret-token"
# The in-process client talks to the app as a browser or curl on this machine would: by
# 127.0.0.1 (TestClient's own "testserver" is a Host the API does not answer for).
BASE_URL = "http://127.0.0.1"


def token_of(settings: Settings) -> str:
    """The token as a user finds it: ORCH_API_TOKEN, else the home's api-token file."""
    return settings.api_token or (settings.home / "api-token").read_text().strip()


class Env:
    """A home, a registered repo and a client on an app over the test database."""

    def __init__(self, tmp_path: Path, db_url: str, engine: sa.Engine, repo: Path) -> None:
        self.tmp = tmp_path
        self.db_url = db_url
        self.engine = engine
        self.repo = repo
        self.settings = self.make_settings()
        repo_ops.add_repo(
            engine,
            "demo",
            repo,
            repo_ops.RepoInput(stages=["development", "testing", "deploy-staging"]),
        )
        self.client = self.make_client(self.settings)

    def make_settings(self, **overrides: Any) -> Settings:
        return load_settings(home=self.tmp / "home", database_url=self.db_url, **overrides)

    def make_client(
        self, settings: Settings, *, authorized: bool = True, **kwargs: Any
    ) -> TestClient:
        """A client of a new app; ``authorized``: it sends the token with every request."""
        app = create_app(settings, self.engine, **kwargs)
        token = kwargs.get("insecure_no_token") is not True and authorized
        headers = {"Authorization": f"Bearer {token_of(settings)}"} if token else {}
        return TestClient(app, base_url=BASE_URL, headers=headers, raise_server_exceptions=False)

    def add(self, title: str = "a task", body: str = "") -> str:
        return task_ops.add_task(self.engine, self.settings, "demo", title, body).task.key

    def task(self, key: str) -> TaskRow:
        with self.engine.connect() as conn:
            t = queries.get_task(conn, key)
        assert t is not None
        return t

    def jobs(self, key: str) -> list[JobRow]:
        with self.engine.connect() as conn:
            return queries.list_jobs(conn, task_id=self.task(key).id)

    def set_task(self, key: str, **fields: Any) -> None:
        task_id = self.task(key).id
        with self.engine.begin() as conn:
            queries.update_task(conn, task_id, now=time.time(), **fields)

    def set_job(self, job_id: int, **fields: Any) -> None:
        with self.engine.begin() as conn:
            queries.update_job(conn, job_id, **fields)

    def folder(self, key: str) -> Path:
        return taskdir.task_dir(self.settings.tasks_dir, key)


@pytest.fixture
def env(
    tmp_path: Path, migrated_db_url: str, engine: sa.Engine, make_repo: Callable[..., Path]
) -> Iterator[Env]:
    e = Env(tmp_path, migrated_db_url, engine, make_repo())
    yield e
    e.client.close()


@pytest.fixture(scope="module")
def quiet_env(
    tmp_path_factory: pytest.TempPathFactory,
    module_migrated_db_url: str,
    module_make_repo: Callable[..., Path],
) -> Iterator[Env]:
    """One ``Env`` for the tests of this module whose requests change nothing (the repo, no
    task): a home, a repo and an app cost ~0.1 s a test. Those that could write check that
    they did not."""
    engine = make_engine(module_migrated_db_url)
    e = Env(
        tmp_path_factory.mktemp("quiet-env"), module_migrated_db_url, engine, module_make_repo()
    )
    try:
        yield e
    finally:
        e.client.close()
        engine.dispose()


def error_of(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert "Traceback" not in body["error"]
    return str(body["error"])


# ---- health, status, queue ---------------------------------------------------------------


def test_health(quiet_env: Env) -> None:
    r = quiet_env.client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


def test_health_and_status_when_the_database_is_down(env: Env) -> None:
    # Nothing listens on port 1 of loopback: every connection is refused.
    down = make_engine("postgresql://postgres@127.0.0.1:1/nothing")
    client = TestClient(
        create_app(env.settings, down),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {token_of(env.settings)}"},
        raise_server_exceptions=False,
    )
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    r = client.get("/status")
    assert r.status_code == 503
    assert "database unavailable" in error_of(r)
    down.dispose()


def test_status_masks_secrets_and_counts(env: Env) -> None:
    st = env.make_settings(
        api_token=TOKEN, alert_webhook_url="http://127.0.0.1:9/hooks/T0KEN-IN-PATH"
    )
    client = env.make_client(st, scheduler=True)
    a, b = env.add("one"), env.add("two")
    env.set_task(b, state="blocked", reasons=["needs a human"])
    (job,) = env.jobs(a)
    env.set_job(
        job.id,
        state="finished",
        outcome="completed",
        cost_usd=0.25,
        tokens_in=10,
        finished_at=time.time(),
    )
    with env.engine.begin() as conn:
        control.worker_heartbeat(
            conn, "h:1:1", name="w", host="h", pid=1, started_at=time.time(), now=time.time()
        )
        control.set_paused(conn, True, now=time.time())
    r = client.get("/status")
    assert r.status_code == 200
    data = r.json()
    text = r.text
    assert TOKEN not in text
    assert "T0KEN-IN-PATH" not in text
    assert data["settings"]["api_token"] == "***"
    assert data["settings"]["alert_webhook_url"] == "***"
    assert data["settings"]["home"] == str(env.tmp / "home")
    if "@" in env.db_url and ":" in env.db_url.split("@")[0].split("//")[1]:
        password = env.db_url.split("@")[0].rsplit(":", 1)[1]
        assert password not in text
    assert data["version"]
    assert data["uptime_s"] >= 0
    assert data["scheduler"] is True
    assert data["kill_switches"]["paused"] is True
    assert data["kill_switches"]["paused_in_db"] is True
    assert data["repos"] == ["demo"]
    assert data["tasks"]["total"] == 2
    assert data["tasks"]["by_state"] == {"active": 1, "blocked": 1}
    assert {"stage": "development", "state": "blocked", "count": 1} in data["tasks"][
        "by_stage_state"
    ]
    assert data["llm_spend"]["total_usd"] == pytest.approx(0.25)
    assert data["llm_spend"]["last_24h_usd"] == pytest.approx(0.25)
    assert data["llm_spend"]["tokens_in"] == 10
    assert data["llm_spend"]["jobs_with_cost"] == 1
    assert [w["id"] for w in data["workers"]] == ["h:1:1"]
    assert data["serial_gate"] == {"demo": None}


def test_status_spend_is_zero_without_costs(env: Env) -> None:
    env.add()
    spend = env.client.get("/status").json()["llm_spend"]
    assert spend.pop("as_of") > 0
    assert spend == {
        "total_usd": 0.0,
        "last_24h_usd": 0.0,
        "last_24h_tokens_in": 0,
        "last_24h_tokens_out": 0,
        "day_budget_usd": 100.0,
        "task_budget_usd": 10.0,
        "tokens_in": 0,
        "tokens_out": 0,
        "jobs_with_cost": 0,
        "top_tasks": [],
    }


def _spent(env: Env, key: str, cost: float, *, days_ago: float = 0, **job: Any) -> None:
    """The task's one job finished ``days_ago``, having cost ``cost``."""
    (first,) = env.jobs(key)
    finished = time.time() - days_ago * 86_400
    env.set_job(
        first.id,
        state="finished",
        outcome="completed",
        started_at=finished - 1,
        finished_at=finished,
        cost_usd=cost,
        **job,
    )


def test_spend_against_small_budgets_everywhere(env: Env) -> None:
    client = env.make_client(
        env.make_settings(llm_budget_per_task_usd=0.001, llm_budget_per_day_usd=0.001)
    )
    cheap, at_budget, dear, cancelled = (env.add(t) for t in ("cheap", "at", "dear", "gone"))
    _spent(env, cheap, 0.0004, tokens_in=1200, tokens_out=345)
    _spent(env, at_budget, 0.001, tokens_in=10, tokens_out=20)
    _spent(env, dear, 0.3, days_ago=2, tokens_in=1_000_000, tokens_out=2_000)
    _spent(env, cancelled, 0.5, days_ago=2)
    env.set_task(cancelled, state="cancelled")

    # /status: the day as its budget counts it (the last 24 hours), the budgets, and the
    # live tasks that spent most, each all its jobs.
    spend = client.get("/status").json()["llm_spend"]
    assert spend["total_usd"] == pytest.approx(0.8014)
    assert spend["last_24h_usd"] == pytest.approx(0.0014)
    assert (spend["last_24h_tokens_in"], spend["last_24h_tokens_out"]) == (1210, 365)
    assert (spend["day_budget_usd"], spend["task_budget_usd"]) == (0.001, 0.001)
    assert spend["top_tasks"] == [
        {
            "key": dear,
            "state": "active",
            "cost_usd": 0.3,
            "tokens_in": 1_000_000,
            "tokens_out": 2000,
        },
        {"key": at_budget, "state": "active", "cost_usd": 0.001, "tokens_in": 10, "tokens_out": 20},
        {"key": cheap, "state": "active", "cost_usd": 0.0004, "tokens_in": 1200, "tokens_out": 345},
    ]

    # The task's jobs carry their cost and tokens; the task its total against its budget.
    detail = client.get(f"/tasks/{cheap}").json()
    (job,) = detail["jobs"]
    assert (job["cost_usd"], job["tokens_in"], job["tokens_out"]) == (0.0004, 1200, 345)
    assert detail["spend"] == {
        "cost_usd": 0.0004,
        "tokens_in": 1200,
        "tokens_out": 345,
        "jobs_with_cost": 1,
        "budget_usd": 0.001,
    }

    # /metrics: the day's spend beside the budgets, and the live tasks that spent most.
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def gauge(name: str, **labels: str) -> list[float]:
        return [
            float(s.value)
            for s in families[name].samples
            if all(s.labels.get(k) == v for k, v in labels.items())
        ]

    assert gauge("orch_llm_spend_last_24h_usd") == [pytest.approx(0.0014)]
    assert gauge("orch_llm_budget_usd", scope="day") == [0.001]
    assert gauge("orch_llm_budget_usd", scope="task") == [0.001]
    assert {s.labels["task"]: s.value for s in families["orch_llm_task_spend_usd"].samples} == {
        dear: 0.3,
        at_budget: 0.001,
        cheap: 0.0004,
    }

    # The board: the day against its budget (reached: marked), the top tasks against theirs.
    board = client.get("/").text
    assert '<span id="spend-day" class="day-spend over">$0.0014 of $0.001 (140%)</span>' in board
    assert "tokens 1,210 in / 365 out" in board
    assert f'class="task-spend" data-task="{cheap}">$0.0004 of $0.001 (40%)</span>' in board
    assert f'class="task-spend over" data-task="{at_budget}">$0.001 of $0.001 (100%)' in board
    assert f'class="task-spend over" data-task="{dear}">$0.30 of $0.001 (30000%)' in board
    assert f'data-task="{cancelled}"' not in board

    # The task page: each job's cost and tokens, and the total against the budget.
    page = client.get(f"/ui/tasks/{cheap}").text
    assert '<span class="task-spend">$0.0004 of $0.001 (40%)</span>' in page
    assert "tokens 1,200 in / 345 out" in page
    assert '<td class="cost">$0.0004</td><td class="tokens">1,200/345</td>' in page
    page = client.get(f"/ui/tasks/{dear}").text
    assert '<span class="task-spend over">$0.30 of $0.001 (30000%)</span>' in page


def test_spend_without_budgets_says_so(env: Env) -> None:
    client = env.make_client(env.make_settings(llm_budget_per_task_usd=0, llm_budget_per_day_usd=0))
    key = env.add()
    _spent(env, key, 12.5, tokens_in=1_234_567, tokens_out=0)
    spend = client.get("/status").json()["llm_spend"]
    assert (spend["day_budget_usd"], spend["task_budget_usd"]) == (None, None)
    assert client.get(f"/tasks/{key}").json()["spend"]["budget_usd"] is None
    assert "$12.50 (no budget)" in client.get("/").text
    page = client.get(f"/ui/tasks/{key}").text
    assert "$12.50 (no budget)" in page
    assert "tokens 1,234,567 in / 0 out" in page
    # A job that reported nothing shows "-", not "$0.00".
    other = env.add()
    assert (
        '<td class="cost">-</td><td class="tokens">-/-</td>'
        in client.get(f"/ui/tasks/{other}").text
    )


def test_serial_gate_holder_is_shown_in_status_and_queue(env: Env) -> None:
    key = env.add()
    env.set_task(key, stage="deploy-staging")
    (job,) = env.jobs(key)
    task_id = env.task(key).id
    with env.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM jobs WHERE id = :id"), {"id": job.id})
        queries.insert_job(
            conn,
            task_id=task_id,
            stage="deploy-staging",
            agent="staging-runner",
            attempt=1,
            now=time.time(),
            serial_key="demo",
        )
    (job,) = env.jobs(key)
    env.set_job(job.id, state="running", started_at=time.time(), lease_owner="w")
    assert env.client.get("/status").json()["serial_gate"] == {"demo": key}
    queue = env.client.get("/queue").json()
    assert queue["serial_gate"] == {"demo": key}
    assert queue["running"]["items"][0]["task"] == key
    assert queue["running"]["items"][0]["agent"] == "staging-runner"
    assert queue["staging_runner"]["running"] == 1


def test_queue_sections_counters_and_limit(env: Env) -> None:
    keys = [env.add(f"t{i}") for i in range(5)]
    now = time.time()
    # keys[0]: running; keys[1]: deferred; keys[2]: blocked; keys[3], keys[4]: queued.
    j0 = env.jobs(keys[0])[0]
    env.set_job(j0.id, state="running", started_at=now - 30, lease_owner="w:1:1", host="h")
    env.set_task(keys[1], state="deferred", reasons=["tool error: timeout; deferred"])
    env.set_job(env.jobs(keys[1])[0].id, not_before=now + 60)
    env.set_task(keys[2], state="blocked", reasons=["developer budget spent"])
    env.set_job(env.jobs(keys[2])[0].id, state="finished", outcome="completed", verdict="FAIL")
    t = env.task(keys[3])
    with env.engine.begin() as conn:
        for attempt, (outcome, verdict) in enumerate(
            [("completed", "PASS"), ("completed", "FAIL"), ("timeout", None)], start=1
        ):
            j = queries.insert_job(
                conn, task_id=t.id, stage="testing", agent="test-runner", attempt=attempt, now=now
            )
            queries.update_job(
                conn, j.id, state="finished", outcome=outcome, verdict=verdict, finished_at=now
            )
        merges.insert_merge_result(
            conn, task_id=t.id, status="MERGED", retest="skipped", rounds=1, reasons=["ok"], now=now
        )
    q = env.client.get("/queue").json()
    assert q["running"]["count"] == 1
    run = q["running"]["items"][0]
    assert run["task"] == keys[0]
    assert run["agent"] == j0.agent
    assert run["elapsed_s"] >= 29
    assert q["deferred"]["count"] == 1
    assert q["deferred"]["items"][0]["task"] == keys[1]
    assert q["deferred"]["items"][0]["not_before"] == pytest.approx(now + 60)
    assert q["deferred"]["items"][0]["reasons"] == ["tool error: timeout; deferred"]
    assert q["blocked"]["items"][0] == {
        **q["blocked"]["items"][0],
        "task": keys[2],
        "reasons": ["developer budget spent"],
    }
    assert q["queued"]["count"] == 2
    assert [i["task"] for i in q["queued"]["items"]] == [keys[3], keys[4]]
    tr = q["test_runner"]
    assert (tr["jobs"], tr["finished"]) == (3, 3)
    assert tr["by_outcome"] == {"completed": 2, "timeout": 1}
    assert tr["by_verdict"] == {"PASS": 1, "FAIL": 1, "none": 1}
    assert tr["enabled"] is True
    assert q["staging_runner"]["jobs"] == 0
    assert q["merge_gate"]["merged"] == 1
    assert q["merge_gate"]["retests_skipped"] == 1
    assert set(q["merge_gate"]) == set(merges.COUNTER_NAMES)

    limited = env.client.get("/queue", params={"limit": 1}).json()
    assert limited["queued"]["count"] == 2
    assert len(limited["queued"]["items"]) == 1
    for bad in ("0", "100000", "x"):
        r = env.client.get("/queue", params={"limit": bad})
        assert r.status_code == 422
        assert "limit" in error_of(r)


# ---- tasks -------------------------------------------------------------------------------


def test_post_task_then_list_and_filter(env: Env) -> None:
    r = env.client.post("/tasks", json={"repo": "demo", "title": "New thing", "body": "Do it."})
    assert r.status_code == 201
    made = r.json()
    assert made["key"] == "DEMO-1"
    assert made["stage"] == "development"
    assert made["folder"] == str(env.folder("DEMO-1"))
    assert (env.folder("DEMO-1") / "00-task.md").exists()
    env.add("second")
    env.set_task("DEMO-2", state="blocked")
    listed = env.client.get("/tasks").json()
    assert [t["key"] for t in listed] == ["DEMO-1", "DEMO-2"]
    assert [t["key"] for t in env.client.get("/tasks?state=blocked").json()] == ["DEMO-2"]
    assert [t["key"] for t in env.client.get("/tasks?limit=1&offset=1").json()] == ["DEMO-2"]
    assert env.client.get("/tasks?stage=testing").json() == []
    assert len(env.client.get("/tasks?repo=demo").json()) == 2
    assert env.client.get("/tasks?repo=nope").status_code == 404
    assert env.client.get("/tasks?stage=nope").status_code == 422
    assert env.client.get("/tasks?state=nope").status_code == 422


def test_post_task_with_a_patch_keeps_it(env: Env) -> None:
    patch = "--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+x\n"
    r = env.client.post("/tasks", json={"repo": "demo", "title": "patched", "patch": patch})
    assert r.status_code == 201
    (kept,) = sorted(taskdir.patches_dir(env.folder("DEMO-1")).glob("*.patch"))
    assert kept.read_text() == patch


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"repo": "demo"}, 422, "title"),
        ({"repo": "demo", "title": ""}, 422, "title"),
        ({"repo": "demo", "title": "two\nlines"}, 422, "title"),
        ({"repo": "demo", "title": "   "}, 422, "title"),
        ({"repo": "demo", "title": "x", "extra": 1}, 422, "extra"),
        ({"repo": "demo", "title": "x", "patch": "  \n"}, 422, "patch"),
        ({"repo": "demo", "title": 5}, 422, "title"),
        ({"repo": "nope", "title": "x"}, 404, "unknown repo"),
        ([1, 2], 422, "invalid request"),
    ],
)
def test_post_task_bad_bodies(quiet_env: Env, body: Any, status: int, words: str) -> None:
    r = quiet_env.client.post("/tasks", json=body)
    assert r.status_code == status, r.text
    assert words in error_of(r)
    assert quiet_env.client.get("/tasks").json() == []


def test_post_task_body_that_is_not_json(quiet_env: Env) -> None:
    r = quiet_env.client.post(
        "/tasks", content=b"\xff{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "invalid request" in error_of(r)
    assert quiet_env.client.get("/tasks").json() == []


def test_task_detail_matches_the_cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    key = env.add("show me", "the body")
    env.set_job(env.jobs(key)[0].id, cost_usd=0.0004, tokens_in=1200, tokens_out=345)
    api = env.client.get(f"/tasks/{key}").json()
    monkeypatch.setenv("ORCH_HOME", str(env.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", env.db_url)
    result = CliRunner().invoke(cli_app, ["task", "show", key, "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert api == cli
    assert api["history"][0]["kind"] == "create"
    assert api["history"][0]["reasons"] == ["task created at stage development"]
    assert api["artifacts"] == ["00-task.md"]
    assert api["jobs"][0]["cost_usd"] == 0.0004
    assert (api["jobs"][0]["tokens_in"], api["jobs"][0]["tokens_out"]) == (1200, 345)
    assert api["spend"]["cost_usd"] == 0.0004


@pytest.mark.parametrize("key", ["NOPE-1", "DEMO-99", "demo-1", "x", "...", "DEMO-1;rm"])
def test_unknown_or_malformed_task_is_404(env: Env, key: str) -> None:
    env.add()
    for path in (f"/tasks/{key}", f"/tasks/{key}/artifacts/00-task.md", f"/tasks/{key}/jobs/1/log"):
        r = env.client.get(path)
        assert r.status_code == 404, (path, r.text)
        error_of(r)
    r = env.client.post(f"/tasks/{key}/cancel")
    assert r.status_code == 404


# ---- artifacts and logs ------------------------------------------------------------------


def test_artifact_text_and_checks(env: Env, tmp_path: Path) -> None:
    key = env.add("art", "<script>alert(1)</script>")
    r = env.client.get(f"/tasks/{key}/artifacts/00-task.md")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/markdown")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert f"task: {key}" in r.text
    assert env.client.get(f"/tasks/{key}/artifacts/13-test-report.md").status_code == 404
    for bad in ("passwd", "00-TASK.md", "00-task.md.bak", ".00-task.md", "0-task.md"):
        r = env.client.get(f"/tasks/{key}/artifacts/{bad}")
        assert r.status_code == 422, bad
        error_of(r)
    # Encoded separators and dot segments never reach a file outside the folder.
    secret = tmp_path / "secret.md"
    secret.write_text("SECRET CONTENT")
    for bad in ("..%2F..%2Fsecret.md", "%2e%2e%2f00-task.md", "..%5C00-task.md"):
        r = env.client.get(f"/tasks/{key}/artifacts/{bad}")
        assert r.status_code in (404, 422), bad
        assert "SECRET" not in r.text
    # A symlink an agent left in the folder, named like an artifact, is not followed out.
    (env.folder(key) / "15-staging-log.md").symlink_to(secret)
    r = env.client.get(f"/tasks/{key}/artifacts/15-staging-log.md")
    assert r.status_code == 404
    assert "SECRET" not in r.text


def _write_log(env: Env, key: str, job: JobRow, text: str) -> Path:
    path = taskdir.run_log_path(env.folder(key), job.id, job.stage, job.agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_job_log_tail(env: Env, tmp_path: Path) -> None:
    key = env.add()
    (job,) = env.jobs(key)
    r = env.client.get(f"/tasks/{key}/jobs/{job.id}/log")
    assert r.status_code == 404
    assert "no log" in error_of(r)
    _write_log(env, key, job, "".join(f"line {i}\n" for i in range(1, 1001)))
    r = env.client.get(f"/tasks/{key}/jobs/{job.id}/log", params={"lines": 2})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "line 999\nline 1000\n"
    assert env.client.get(f"/tasks/{key}/jobs/{job.id}/log").text.count("\n") == 200
    for bad in ("0", "10001", "x"):
        assert env.client.get(f"/tasks/{key}/jobs/{job.id}/log?lines={bad}").status_code == 422
    other = env.add("other")
    assert env.client.get(f"/tasks/{other}/jobs/{job.id}/log").status_code == 404
    assert env.client.get(f"/tasks/{key}/jobs/999999/log").status_code == 404
    assert env.client.get(f"/tasks/{key}/jobs/..%2F..%2Fetc/log").status_code in (404, 422)


def test_job_log_symlink_out_of_the_folder_is_refused(env: Env, tmp_path: Path) -> None:
    key = env.add()
    (job,) = env.jobs(key)
    secret = tmp_path / "secret.log"
    secret.write_text("SECRET LOG\n")
    path = taskdir.run_log_path(env.folder(key), job.id, job.stage, job.agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(secret)
    r = env.client.get(f"/tasks/{key}/jobs/{job.id}/log")
    assert r.status_code == 404
    assert "SECRET" not in r.text


def _events(lines: Iterator[str]) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    out: list[tuple[str, str]] = []
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                out.append((event, "\n".join(data)))
            event, data = "message", []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
    return out


def test_job_log_follow_of_a_queued_job_is_refused_at_once(env: Env) -> None:
    key = env.add()
    (job,) = env.jobs(key)
    r = env.client.get(f"/tasks/{key}/jobs/{job.id}/log?follow=1")
    assert r.status_code == 404
    assert "has not started" in error_of(r)


def test_job_log_follow_of_a_finished_job_sends_the_tail_and_ends(env: Env) -> None:
    key = env.add()
    (job,) = env.jobs(key)
    _write_log(env, key, job, "a\nb\nc\n")
    env.set_job(job.id, state="finished", outcome="completed", finished_at=time.time())
    with env.client.stream("GET", f"/tasks/{key}/jobs/{job.id}/log?follow=1&lines=2") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    assert events == [("message", "b\nc"), ("end", "finished: completed")]


def test_job_log_follow_streams_new_lines_until_the_job_finishes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The follow looks at the job's state every 1 s and at the file every 0.25 s: here every
    # 0.1 s and 0.02 s. How often it looks is not what this test is about; that the lines
    # written while the job ran come before its end is (the state is still read first).
    monkeypatch.setattr(files, "FOLLOW_STATE_EVERY_S", 0.1)
    monkeypatch.setattr(files, "FOLLOW_POLL_S", 0.02)
    key = env.add()
    (job,) = env.jobs(key)
    env.set_job(job.id, state="running", started_at=time.time(), lease_owner="w")
    path = _write_log(env, key, job, "first\n")
    wrote = threading.Event()

    def writer() -> None:
        wrote.wait(30)
        with path.open("a") as fh:
            fh.write("second\nthird")
        env.set_job(job.id, state="finished", outcome="timeout", finished_at=time.time())

    thread = threading.Thread(target=writer)
    thread.start()
    got: list[tuple[str, str]] = []
    with env.client.stream("GET", f"/tasks/{key}/jobs/{job.id}/log?follow=true") as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: first"):
                got.append(("message", "first"))
                wrote.set()
                break
        got += _events(lines)
    thread.join()
    data = "\n".join(d for e, d in got if e == "message")
    assert data.split("\n") == ["first", "second", "third"]
    assert got[-1] == ("end", "finished: timeout")


# ---- actions -----------------------------------------------------------------------------


def test_cancel_retry_approve(env: Env) -> None:
    key = env.add()
    r = env.client.post(f"/tasks/{key}/cancel", json={"reason": "not needed"})
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled"
    history = env.client.get(f"/tasks/{key}").json()["history"]
    assert history[-1]["actor"] == "api"
    assert history[-1]["reasons"] == ["cancelled by api: not needed"]
    r = env.client.post(f"/tasks/{key}/cancel")
    assert r.status_code == 409
    assert "nothing to cancel" in error_of(r)

    blocked = env.add("blocked one")
    env.set_task(blocked, state="blocked", reasons=["stuck"])
    env.set_job(env.jobs(blocked)[0].id, state="finished", outcome="completed", verdict="FAIL")
    r = env.client.post(f"/tasks/{blocked}/approve", json={"artifact": "dev_status: FAILED\n"})
    assert r.status_code == 409
    assert "does not pass" in error_of(r)
    r = env.client.post(f"/tasks/{blocked}/approve", json={"artifact": "dev_status: DONE\n"})
    assert r.status_code == 200
    assert r.json()["state"] == "active"
    assert env.jobs(blocked)[-1].agent == "approved"
    assert (env.folder(blocked) / "10-dev-report.md").read_text() == "dev_status: DONE\n"

    env.set_task(blocked, state="blocked")
    env.set_job(env.jobs(blocked)[-1].id, state="finished")
    r = env.client.post(f"/tasks/{blocked}/retry", json={"patch": "--- a\n+++ b\n"})
    assert r.status_code == 200
    assert r.json()["stage"] == "development"
    assert env.client.post(f"/tasks/{blocked}/retry").status_code == 409
    r = env.client.post(f"/tasks/{blocked}/retry", json={"patch": ""})
    assert r.status_code == 422
    r = env.client.post(f"/tasks/{blocked}/cancel", json={"why": "typo"})
    assert r.status_code == 422


def test_mutations_wake_the_scheduler(env: Env) -> None:
    woken: list[int] = []
    client = env.make_client(env.settings, wake=lambda: woken.append(1))
    client.post("/tasks", json={"repo": "demo", "title": "wake up"})
    client.post("/pause")
    client.post("/resume")
    assert len(woken) == 3


def test_pause_and_resume(env: Env) -> None:
    assert env.client.post("/pause").json() == {"paused": True}
    with env.engine.connect() as conn:
        assert control.is_paused(conn)
    assert env.client.get("/status").json()["kill_switches"]["paused"] is True
    assert env.client.post("/resume").json() == {"paused": False}
    with env.engine.connect() as conn:
        assert not control.is_paused(conn)


# ---- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["file", "env"])
def test_a_token_guards_every_request_but_health(env: Env, source: str) -> None:
    """Reads too: a job's processes reach 127.0.0.1 as any local program does, and a read
    shows every task's artifacts and job logs. Before, every GET was open."""
    key = env.add()
    settings = env.make_settings(api_token=TOKEN) if source == "env" else env.settings
    client = env.make_client(settings, authorized=False)
    token = token_of(settings)
    mutations = [
        ("/tasks", {"repo": "demo", "title": "x"}),
        (f"/tasks/{key}/cancel", None),
        (f"/tasks/{key}/retry", None),
        (f"/tasks/{key}/approve", None),
        ("/pause", None),
        ("/resume", None),
    ]
    reads = [
        "/status",
        "/queue",
        "/tasks",
        f"/tasks/{key}",
        f"/tasks/{key}/artifacts/00-task.md",
        "/alerts",
        "/repos",
        "/metrics",
        "/",
        f"/ui/tasks/{key}",
        "/docs",
        "/openapi.json",
        "/static/htmx.min.js",
    ]
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": token},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": "Bearer é".encode()},
        # A cookie is no credential here, whatever it holds.
        {"Cookie": f"orch_session={token}"},
        {"Cookie": f"orch_session={login_code(token)}"},
        # The link's code reads as Basic's password only, and the token is not the code.
        {"Authorization": f"Bearer {login_code(token)}"},
        {"Authorization": basic(f"orch:{token}")},
        {"Authorization": basic(f"{login_code(token)}:")},
        {"Authorization": basic(login_code(token))},
        {"Authorization": basic(f"orch:{login_code(token)[:-1]}")},
        {"Authorization": f"Basic {login_code(token)}"},
    ):
        for path, body in mutations:
            r = client.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "Bearer" in error_of(r)
            assert r.headers["www-authenticate"] == "Bearer"
        for path in reads:
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert "orch dashboard" in error_of(r)
    with env.engine.connect() as conn:
        assert not control.is_paused(conn)
    assert client.get("/health").status_code == 200
    good = {"Authorization": f"Bearer {token}"}
    assert len(client.get("/tasks", headers=good).json()) == 1
    assert client.post("/pause", headers=good).status_code == 200
    r = client.post("/tasks", json={"repo": "demo", "title": "x"}, headers=good)
    assert r.status_code == 201
    for path in reads:
        assert client.get(path, headers=good).status_code == 200, path
    schema = client.get("/openapi.json", headers=good).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/pause"]["post"]["security"] == [{"HTTPBearer": []}]
    assert schema["paths"]["/status"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_the_dashboards_link_gives_a_browser_reads_and_nothing_more(env: Env) -> None:
    key = env.add()
    client = env.make_client(env.settings, authorized=False)
    token = token_of(env.settings)
    code = login_code(token)
    # The link: HTTP Basic with the code as the password, which a browser keeps for this
    # origin alone (a cookie it would send to every port of 127.0.0.1).
    link = dashboard_link("http://127.0.0.1:8765", load_token(env.settings))
    assert link == f"http://orch:{code}@127.0.0.1:8765/"
    assert token not in link
    # A read without it is asked for it: a browser then asks its user, or takes the link's.
    r = client.get("/")
    assert r.status_code == 401
    assert 'Basic realm="orch dashboard"' in r.headers["www-authenticate"]
    assert "set-cookie" not in r.headers
    for given in ("", "wrong", token, code[:-1], code + "0"):
        assert client.get("/", headers={"Authorization": basic(f"orch:{given}")}).status_code == 401
    session = {"Authorization": basic(f"orch:{code}")}
    for path in ("/", f"/ui/tasks/{key}", f"/tasks/{key}", "/docs", "/static/htmx.min.js"):
        r = client.get(path, headers=session)
        assert r.status_code == 200, path
        assert "set-cookie" not in r.headers, path
    # Any user name: the code is what counts (a user may type anything in the prompt).
    assert client.get("/tasks", headers={"Authorization": basic(f"me:{code}")}).status_code == 200
    # Reads only: the code changes nothing.
    for path in ("/pause", f"/tasks/{key}/cancel"):
        assert client.post(path, headers=session).status_code == 401, path
    with env.engine.connect() as conn:
        assert not control.is_paused(conn)
    # A new token revokes the code.
    (env.settings.home / "api-token").unlink()
    fresh = env.make_client(env.settings, authorized=False)
    assert fresh.get("/tasks", headers=session).status_code == 401


def test_without_a_token_the_schema_claims_no_auth(env: Env) -> None:
    client = env.make_client(env.settings, insecure_no_token=True)
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "security" not in schema["paths"]["/pause"]["post"]
    assert "security" not in schema["paths"]["/status"]["get"]
    # Reads are open, and the dashboard's link goes to the board.
    assert client.get("/tasks").status_code == 200
    assert dashboard_link("http://127.0.0.1:8765", None) == "http://127.0.0.1:8765/"
    assert client.get("/").status_code == 200
    assert client.post("/pause").json() == {"paused": True}
    # The other checks stay: another origin, another Host.
    r = client.post(
        "/resume", headers={"Origin": "http://127.0.0.1:9", "Sec-Fetch-Site": "same-site"}
    )
    assert r.status_code == 403
    assert client.get("/tasks", headers={"Host": "evil.example"}).status_code == 421


def test_the_token_file_is_made_once_private_and_never_shown(env: Env) -> None:
    path = env.settings.home / "api-token"
    # The Env's app made it; another app on the same home keeps it.
    token = token_of(env.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env.make_client(env.settings)
    assert token_of(env.settings) == token
    made = load_token(env.settings)
    assert (made.value, made.source, made.created) == (token, str(path), False)
    assert token not in repr(made)
    assert made.where == f"in {path}"
    assert [p.name for p in path.parent.iterdir() if "api-token" in p.name] == ["api-token"]
    assert token not in env.client.get("/status").text


def test_a_token_file_that_may_be_known_is_refused(env: Env, tmp_path: Path) -> None:
    path = env.settings.home / "api-token"
    good = path.read_text()
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="can be read by others"):
        load_token(env.settings)
    path.unlink()
    elsewhere = tmp_path / "planted"
    elsewhere.write_text(good)
    elsewhere.chmod(0o600)
    path.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symlink"):
        load_token(env.settings)
    path.unlink()
    path.write_text("has spaces in it\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="malformed"):
        load_token(env.settings)
    with pytest.raises(ConfigError, match="ORCH_API_TOKEN"):
        load_token(env.make_settings(api_token="two words"))


def test_the_guard_decides_on_host_origin_token_and_length() -> None:
    policy = Policy(
        allowed_hosts=frozenset({"127.0.0.1", "localhost", "::1", "orch.internal"}),
        token="s3cret",
        max_body_bytes=100,
    )
    auth = {"authorization": "Bearer s3cret"}

    def status(method: str, **headers: str) -> int | None:
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        refusal = decide(policy, method, named)
        return refusal.status if refusal is not None else None

    for host in (
        "127.0.0.1:8765",
        "localhost",
        "LOCALHOST.:1",
        "[::1]:80",
        "[0:0::1]",
        "orch.internal:443",
    ):
        assert status("GET", host=host, **auth) is None, host
        assert status("POST", host=host, **auth) is None, host
    for host in ("evil.example", "127.0.0.1.nip.io", "x@127.0.0.1", "127.0.0.1:80:80", "[::2]", ""):
        assert status("GET", host=host) == 421, host
    assert status("GET") == 400
    own = {"host": "127.0.0.1:8765", **auth}
    assert (
        status("POST", **own, origin="http://127.0.0.1:8765", sec_fetch_site="same-origin") is None
    )
    for origin in ("http://127.0.0.1:8766", "http://localhost:8765", "null", "127.0.0.1:8765"):
        assert status("POST", **own, origin=origin) == 403, origin
    for site in ("same-site", "cross-site"):
        assert status("POST", **{**own, "sec-fetch-site": site}) == 403, site
    assert status("POST", **{**own, "sec-fetch-site": "none"}) is None
    # Reads need the token too, or the dashboard's code (none set in this policy); a
    # read's origin is not checked (the browser's same-origin policy keeps its answer).
    assert status("GET", host="localhost") == 401
    assert status("GET", host="localhost", cookie="orch_session=s3cret") == 401
    assert status("GET", host="localhost", authorization=basic("orch:s3cret")) == 401
    assert status("GET", host="localhost", origin="http://evil.example", **auth) is None
    assert status("POST", host="localhost") == 401
    assert status("DELETE", host="localhost", authorization="Bearer wrong") == 401
    assert status("POST", **own, content_length="101") == 413
    assert status("GET", host="localhost", content_length="101", **auth) == 413
    assert status("POST", **own, content_length="100") is None
    assert status("POST", **own, content_length="-1") == 400
    # Host before origin before token before length: a foreign page learns nothing more.
    assert status("POST", host="evil.example", origin="http://evil.example") == 421
    assert status("POST", host="localhost", origin="http://evil.example") == 403
    assert status("POST", host="localhost", content_length="101") == 401


def test_a_chunked_body_is_cut_off_at_the_cap(env: Env) -> None:
    client = env.make_client(env.make_settings(api_max_body_bytes=4096))
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        # No length up front: the client sends it chunked, the guard counts as it reads.
        for _ in range(1000):
            sent.append(1)
            yield b" " * 1024

    r = client.post("/tasks", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "ORCH_API_MAX_BODY_BYTES" in error_of(r)
    assert env.client.get("/tasks").json() == []


# ---- alerts, metrics, errors -------------------------------------------------------------


def test_alerts(env: Env) -> None:
    key = env.add()
    task_id = env.task(key).id
    with env.engine.begin() as conn:
        alert_rows.insert_alert(
            conn,
            kind="task-blocked",
            severity="warning",
            message=f"{key} is blocked",
            reasons=["gate said no"],
            now=time.time(),
            task_id=task_id,
        )
        alert_rows.insert_alert(
            conn, kind="other", severity="info", message="m", reasons=[], now=time.time() + 1
        )
    alerts = env.client.get("/alerts").json()
    assert [a["kind"] for a in alerts] == ["other", "task-blocked"]
    assert alerts[1]["task"] == key
    assert alerts[1]["reasons"] == ["gate said no"]
    assert alerts[0]["task"] is None
    assert len(env.client.get("/alerts?limit=1").json()) == 1
    assert env.client.get("/alerts?limit=0").status_code == 422


def test_metrics(env: Env) -> None:
    key = env.add()
    (job,) = env.jobs(key)
    now = time.time()
    env.set_job(
        job.id,
        state="finished",
        outcome="completed",
        verdict="PASS",
        started_at=now - 42,
        finished_at=now,
        cost_usd=1.5,
    )
    env.add("queued")
    with env.engine.begin() as conn:
        alert_rows.insert_alert(
            conn, kind="task-blocked", severity="warning", message="m", reasons=[], now=now
        )
    r = env.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def sample(family: str, name: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no sample {name} {labels} in {families[family].samples}")

    assert (
        sample(
            "orch_jobs_finished",
            "orch_jobs_finished_total",
            stage="development",
            outcome="completed",
        )
        == 1
    )
    assert sample("orch_transitions", "orch_transitions_total", kind="create") == 2
    assert sample("orch_queue_depth", "orch_queue_depth") == 1
    assert sample("orch_jobs", "orch_jobs", state="queued") == 1
    assert sample("orch_llm_cost_usd", "orch_llm_cost_usd_total", agent=job.agent) == 1.5
    assert sample("orch_alerts", "orch_alerts_total", kind="task-blocked") == 1
    hist = "orch_job_duration_seconds"
    assert sample(hist, f"{hist}_bucket", stage="development", le="30.0") == 0
    assert sample(hist, f"{hist}_bucket", stage="development", le="60.0") == 1
    assert sample(hist, f"{hist}_count", stage="development") == 1
    assert sample(hist, f"{hist}_sum", stage="development") == pytest.approx(42, abs=0.01)
    assert sample("orch_tasks", "orch_tasks", stage="development", state="active") == 2
    assert sample("orch_merge_gate", "orch_merge_gate_total", counter="merged") == 0
    # Each app has a registry of its own: a second one in this process scrapes too.
    assert env.make_client(env.settings).get("/metrics").status_code == 200


def test_errors_are_json_without_a_stack_trace(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    r = env.client.get("/no/such/page")
    assert r.status_code == 404
    error_of(r)
    r = env.client.delete("/tasks")
    assert r.status_code == 405
    error_of(r)
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}

    def boom(*_a: Any, **_k: Any) -> None:
        msg = "secret internals /etc/shadow"
        raise RuntimeError(msg)

    monkeypatch.setattr(reads, "status", boom)
    r = env.client.get("/status")
    assert r.status_code == 500
    message = error_of(r)
    assert "secret" not in message
    assert "internal error" in message


def test_openapi_and_docs_work_offline(quiet_env: Env) -> None:
    schema = quiet_env.client.get("/openapi.json").json()
    for path in (
        "/health", "/status", "/queue", "/tasks", "/tasks/{key}",
        "/tasks/{key}/artifacts/{name}", "/tasks/{key}/jobs/{job_id}/log",
        "/tasks/{key}/cancel", "/tasks/{key}/retry", "/tasks/{key}/approve",
        "/alerts", "/pause", "/resume", "/metrics",
    ):  # fmt: skip
        assert path in schema["paths"], path
    assert "ErrorOut" in schema["components"]["schemas"]
    assert "StatusOut" in schema["components"]["schemas"]
    not_found = schema["paths"]["/tasks/{key}"]["get"]["responses"]["404"]
    assert "application/json" in not_found["content"]
    docs = quiet_env.client.get("/docs").text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower()
    assert quiet_env.client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200


# ---- dashboard ---------------------------------------------------------------------------


def test_board_escapes_and_shows_cards(env: Env) -> None:
    key = env.add("<script>alert('x')</script>", "<img src=x onerror=alert(1)>")
    env.set_task(key, reasons=["<b>bold</b> reason"])
    r = env.client.get("/")
    assert r.status_code == 200
    html = r.text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; reason" in html
    assert f'id="card-{key}"' in html
    column = html.split('data-stage="development" id="column-development"')[1].split("</section>")[
        0
    ]
    assert f'id="card-{key}"' in column
    assert '<script src="/static/htmx.min.js"' in html
    assert '<noscript><meta http-equiv="refresh"' in html
    assert 'hx-get="/ui/board"' in html
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert env.client.get("/ui/board").text.startswith('<div id="board"')
    htmx = env.client.get("/static/htmx.min.js")
    assert htmx.status_code == 200
    assert "htmx" in htmx.text[:200]


def _card(html: str, key: str) -> str:
    return html.split(f'id="card-{key}"', 1)[1].split("</article>", 1)[0]


def test_each_card_shows_its_task_s_newest_job(env: Env) -> None:
    """A card names its task's newest job (agent, attempt, how long it runs); a task with no
    job yet says so; finished tasks have their own column."""
    again, fresh, done = env.add("ran twice"), env.add("ran once"), env.add("finished")
    (first,) = env.jobs(again)
    env.set_job(first.id, state="finished", outcome="completed", finished_at=time.time())
    task = env.task(again)
    with env.engine.begin() as conn:
        second = queries.insert_job(
            conn, task_id=task.id, stage="development", agent="codex", attempt=2, now=time.time()
        )
        bare = queries.insert_task(
            conn, repo_id=task.repo_id, title="no job yet", body="", stage="testing",
            now=time.time(),
        )  # fmt: skip
    env.set_job(second.id, state="running", started_at=time.time() - 125, lease_owner="w")
    env.set_task(done, state="done")
    html = env.client.get("/").text
    card = _card(html, again)
    assert "codex &middot; attempt 2 &middot; running 2m" in card, card
    assert f"{env.jobs(fresh)[0].agent} &middot; attempt 1 &middot; active " in _card(html, fresh)
    assert "- &middot; attempt 0 &middot; active " in _card(html, bare.key)
    finished = html.split('id="column-finished"', 1)[1].split("</section>", 1)[0]
    assert f'id="card-{done}"' in finished
    assert f'id="card-{again}"' not in finished


def test_a_board_request_reads_the_unfolded_jobs_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's counters and the spend count from one read of the jobs the totals have
    not folded, not one read each."""
    env.add("a task")
    env.client.get("/")  # the first request folds the history
    reads_of_the_tail = 0
    unfolded = Folded.unfolded

    def counted(self: Folded, conn: sa.Connection) -> Any:
        nonlocal reads_of_the_tail
        reads_of_the_tail += 1
        return unfolded(self, conn)

    monkeypatch.setattr(Folded, "unfolded", counted)
    for path in ("/", "/ui/board"):
        reads_of_the_tail = 0
        assert env.client.get(path).status_code == 200
        assert reads_of_the_tail == 1, path


def test_task_page_shows_history_artifacts_and_log(env: Env) -> None:
    key = env.add("page", "<b>body</b>")
    (job,) = env.jobs(key)
    env.set_job(job.id, state="running", started_at=time.time(), lease_owner="w")
    _write_log(env, key, job, "hello <from> the agent\n")
    report = "---\ndev_status: DONE\n---\n\n<script>alert(1)</script>\n"
    (env.folder(key) / "10-dev-report.md").write_text(report)
    with env.engine.begin() as conn:  # the job's record of it, as the pipeline keeps it
        jobq.record_artifacts(conn, job.id, {"10-dev-report.md": taskdir.digest(report)})
    # A report no job wrote (forged) is named apart, never shown as a result.
    (env.folder(key) / "16-merge-report.md").write_text("---\nmerge_status: MERGED\n---\n")
    html = env.client.get(f"/ui/tasks/{key}").text
    assert "not written by this pipeline" in html
    assert "merge_status" not in html
    assert "task created at stage development" in html
    assert "dev_status" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "hello &lt;from&gt; the agent" in html
    assert "&lt;b&gt;body&lt;/b&gt;" in html
    assert "hello &lt;from&gt;" in env.client.get(f"/ui/tasks/{key}/log").text
    # Unpinned, the tail follows the task's newest job; with ?job= it stays on that job.
    assert f'hx-get="/ui/tasks/{key}/log"' in html
    pinned = env.client.get(f"/ui/tasks/{key}?job={job.id}").text
    assert f'hx-get="/ui/tasks/{key}/log?job={job.id}"' in pinned
    assert "task created" in env.client.get(f"/ui/tasks/{key}/summary").text
    assert "dev_status" in env.client.get(f"/ui/tasks/{key}/artifacts").text
    r = env.client.get("/ui/tasks/NOPE-1")
    assert r.status_code == 404
    assert "There is no task" in r.text


def test_serve_refuses_beyond_loopback_without_a_token(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_HOME", str(env.settings.home))
    monkeypatch.setenv("ORCH_DATABASE_URL", env.db_url)
    monkeypatch.delenv("ORCH_API_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code != 0
    assert "beyond loopback" in result.output


def test_add_repo_self_hosting_defaults_the_staging_command(
    engine: sa.Engine, make_repo: Callable[..., Path]
) -> None:
    repo = repo_ops.add_repo(
        engine, "orchestrator", make_repo(), repo_ops.RepoInput(self_hosting=True)
    )
    assert repo.staging_cmd is not None
    assert repo.staging_cmd[1:] == ["-m", "orchestrator.selfhost_staging"]
    assert os.path.isabs(repo.staging_cmd[0])
    own = repo_ops.add_repo(
        engine,
        "other",
        make_repo(),
        repo_ops.RepoInput(self_hosting=True, staging_cmd="make staging"),
    )
    assert own.staging_cmd == ["make", "staging"]
    plain = repo_ops.add_repo(engine, "plain", make_repo(), repo_ops.RepoInput())
    assert plain.staging_cmd is None
