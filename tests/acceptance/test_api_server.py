"""`orch serve` as a real process on a free loopback port: every endpoint, auth on and off,
404 and 422, path traversal, the refusal to bind beyond loopback, a clean stop on SIGTERM,
and the self-hosting staging smoke against a copy of this repository.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_server import ORCH, FakeRepo, Server, base_env, wait_for

from orchestrator import repo_ops
from orchestrator.config import load_settings
from orchestrator.runners import staging_runner
from orchestrator.runners.base import RunContext
from orchestrator.store import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "acceptance-token-123"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def fake(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> Iterator[FakeRepo]:
    repo = FakeRepo(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}), plan={})
    yield repo
    repo.close()


def raw_get(server: Server, target: str) -> tuple[int, bytes]:
    """GET with the target sent exactly as written: no client-side normalization of ``..``;
    with the token the server's client sends (the API's reads need it)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("Authorization", server.client.headers["Authorization"])
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def task_of(server: Server, key: str) -> dict[str, Any]:
    r = server.client.get(f"/tasks/{key}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_every_endpoint_with_the_scheduler(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo
) -> None:
    fake.set_plan(
        {
            "DEMO-1:development:*": {"hold": True},
            "DEMO-3:development:*": {"verdict": "FAIL"},
        }
    )
    server = Server(tmp_path, base_env(fake.home, migrated_db_url, ORCH_DEVELOPER_RETRY_BUDGET="0"))
    try:
        c = server.client
        assert c.get("/health").json() == {"status": "ok", "database": "ok"}
        wait_for(lambda: c.get("/status").json()["workers"] != [], 60, "the scheduler's heartbeat")
        status = c.get("/status").json()
        assert status["scheduler"] is True
        assert status["workers"][0]["name"] == "serve"
        assert status["serial_gate"] == {"demo": None}
        assert status["settings"]["home"] == str(fake.home)

        r = c.post("/tasks", json={"repo": "demo", "title": "first", "body": "held"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        assert key == "DEMO-1"
        wait_for(lambda: fake.started(key, "development"), 60, "development starts")
        queue = c.get("/queue").json()
        assert [j["task"] for j in queue["running"]["items"]] == [key]
        assert queue["running"]["items"][0]["agent"].startswith("command:")
        job_id = queue["running"]["items"][0]["job"]

        # Follow the held job's log live; release it; the stream ends with the job.
        events: list[str] = []

        def follow() -> None:
            with c.stream("GET", f"/tasks/{key}/jobs/{job_id}/log?follow=1") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                events.extend(stream.iter_lines())

        reader = threading.Thread(target=follow)
        reader.start()
        wait_for(lambda: any(line.startswith("data: ") for line in events), 30, "the log tail")
        fake.release(key, "development")
        reader.join(timeout=120)
        assert not reader.is_alive()
        assert "event: end" in events
        assert any("finished: completed" in line for line in events)

        wait_for(lambda: task_of(server, key)["state"] == "done", 180, f"{key} is done")
        shown = task_of(server, key)
        assert [h["kind"] for h in shown["history"]] == ["create", "advance", "advance", "done"]
        assert all(h["reasons"] for h in shown["history"])
        assert {"00-task.md", "10-dev-report.md", "13-test-report.md", "15-staging-log.md"} <= set(
            shown["artifacts"]
        )
        r = c.get(f"/tasks/{key}/artifacts/13-test-report.md")
        assert r.status_code == 200
        assert "result: PASSED" in r.text
        r = c.get(f"/tasks/{key}/jobs/{job_id}/log", params={"lines": 3})
        assert r.status_code == 200
        assert len(r.text.splitlines()) <= 3

        # Cancel, block, retry, approve.
        second = c.post("/tasks", json={"repo": "demo", "title": "second"}).json()["key"]
        assert c.post(f"/tasks/{second}/cancel", json={"reason": "dup"}).json()["state"] == (
            "cancelled"
        )
        third = c.post("/tasks", json={"repo": "demo", "title": "third"}).json()["key"]
        wait_for(lambda: task_of(server, third)["state"] == "blocked", 120, f"{third} blocks")
        alerts = c.get("/alerts").json()
        assert any(a["task"] == third for a in alerts)
        assert any(b["task"] == third for b in c.get("/queue").json()["blocked"]["items"])
        r = c.post(f"/tasks/{third}/retry")
        assert r.status_code == 200
        assert r.json()["state"] == "active"
        wait_for(lambda: task_of(server, third)["state"] == "blocked", 120, f"{third} blocks again")
        r = c.post(f"/tasks/{third}/approve", json={"artifact": "dev_status: DONE\n"})
        assert r.status_code == 200, r.text
        assert c.post(f"/tasks/{second}/approve").status_code == 409

        assert c.post("/pause").json() == {"paused": True}
        assert c.get("/status").json()["kill_switches"]["paused"] is True
        assert c.post("/resume").json() == {"paused": False}

        metrics = c.get("/metrics").text
        assert 'orch_jobs_finished_total{agent="' in metrics
        assert 'orch_transitions_total{kind="done"} 1.0' in metrics
        board = c.get("/")
        assert board.status_code == 200
        assert f'id="card-{key}"' in board.text
        assert c.get(f"/ui/tasks/{key}").status_code == 200
        assert "swagger-ui" in c.get("/docs").text
        assert "/tasks/{key}/jobs/{job_id}/log" in c.get("/openapi.json").json()["paths"]

        # 404 and 422.
        assert c.get("/tasks/NOPE-1").status_code == 404
        assert c.get("/tasks/NOPE-1").json() == {"error": "unknown task NOPE-1"}
        assert c.get(f"/tasks/{key}/artifacts/17-deploy-log.md").status_code == 404
        assert c.get(f"/tasks/{key}/artifacts/passwd").status_code == 422
        assert c.get(f"/tasks/{key}/jobs/999999/log").status_code == 404
        assert c.post("/tasks", json={"repo": "demo"}).status_code == 422
        assert c.post("/tasks", json={"repo": "nope", "title": "x"}).status_code == 404
        assert c.get("/queue?limit=-1").status_code == 422

        # Path traversal, sent raw so no client tidies it up first.
        secret = tmp_path / "home" / "secret.md"
        secret.write_text("TOP SECRET")
        for target in (
            f"/tasks/{key}/artifacts/../../secret.md",
            f"/tasks/{key}/artifacts/..%2F..%2Fsecret.md",
            f"/tasks/{key}/artifacts/%2e%2e%2f%2e%2e%2fsecret.md",
            f"/tasks/{key}/artifacts/..%252F..%252Fsecret.md",
            f"/tasks/..%2F{key}/artifacts/00-task.md",
            "/tasks/../../home/secret.md",
            f"/tasks/{key}/jobs/{job_id}/../../../secret.md",
            f"/tasks/{key}/jobs/..%2F..%2Fsecret.md/log",
            "/static/../secret.md",
            "/static/..%2F..%2Fsecret.md",
        ):
            code, body = raw_get(server, target)
            assert b"TOP SECRET" not in body, target
            assert code in (400, 404, 422), (target, code, body[:200])
    finally:
        code = server.stop()
    assert code == 0, server.output()
    # The scheduler stopped cleanly too: its worker row is gone.
    assert fake.query("SELECT id FROM workers") == []


def test_auth_on_a_real_server(tmp_path: Path, migrated_db_url: str, fake: FakeRepo) -> None:
    server = Server(
        tmp_path, base_env(fake.home, migrated_db_url, ORCH_API_TOKEN=TOKEN), scheduler=False
    )
    try:
        c = server.client
        r = c.post("/tasks", json={"repo": "demo", "title": "no token"})
        assert r.status_code == 401
        assert r.json()["error"].startswith("this needs Authorization: Bearer")
        assert c.post("/pause", headers={"Authorization": "Bearer nope"}).status_code == 401
        # Reads need it too: before, every GET answered whoever asked.
        r = c.get("/tasks")
        assert r.status_code == 401
        assert r.json()["error"].startswith("reading needs Authorization: Bearer")
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/tasks", headers=good).json() == []
        r = c.post("/tasks", json={"repo": "demo", "title": "token"}, headers=good)
        assert r.status_code == 201
        key = r.json()["key"]
        assert c.post(f"/tasks/{key}/cancel").status_code == 401
        assert c.post(f"/tasks/{key}/cancel", headers=good).status_code == 200
        assert c.post("/pause", headers=good).json() == {"paused": True}
        assert c.post("/resume", headers=good).json() == {"paused": False}
        status = c.get("/status", headers=good)
        assert status.status_code == 200
        assert TOKEN not in status.text
        # The dashboard's link gives a browser reads, and only reads: its code is Basic's
        # password, which the browser sends once the server asks for it.
        link = httpx.URL(server.dashboard_link())
        assert TOKEN not in str(link)
        assert 'Basic realm="orch dashboard"' in c.get("/").headers["www-authenticate"]
        session = httpx.BasicAuth(link.username, link.password)
        assert c.get(f"/tasks/{key}", auth=session).status_code == 200
        assert c.post("/pause", auth=session).status_code == 401
    finally:
        assert server.stop() == 0


def test_auth_on_by_default_with_the_token_file(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo
) -> None:
    server = Server(tmp_path, base_env(fake.home, migrated_db_url), scheduler=False)
    try:
        # Server's client sends the file's token, as a user's script would.
        r = server.client.post("/tasks", json={"repo": "demo", "title": "with the file's"})
        assert r.status_code == 201, r.text
        r = server.client.post("/pause", headers={"Authorization": ""})
        assert r.status_code == 401
        assert "api-token" in r.json()["error"]
    finally:
        assert server.stop() == 0
    assert "the token is in" in server.output()


def test_auth_off_a_real_server_takes_mutations(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo
) -> None:
    server = Server(
        tmp_path,
        base_env(fake.home, migrated_db_url),
        scheduler=False,
        args=("--insecure-no-token",),
    )
    try:
        r = server.client.post("/tasks", json={"repo": "demo", "title": "open"})
        assert r.status_code == 201
        assert server.client.get("/status").json()["scheduler"] is False
    finally:
        assert server.stop() == 0
    assert "WARNING --insecure-no-token" in server.output()


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--host", "0.0.0.0"], {}),
        (["--host", "192.0.2.1"], {}),
        ([], {"ORCH_API_HOST": "0.0.0.0"}),
    ],
)
def test_refuses_to_bind_beyond_loopback_without_a_token(
    tmp_path: Path, db_url: str, args: list[str], extra: dict[str, str]
) -> None:
    env = base_env(tmp_path / "home", db_url, **extra)
    proc = subprocess.run(
        [str(ORCH), "serve", "--port", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "beyond loopback" in proc.stderr
    assert "set api_token" in proc.stderr


def test_a_busy_port_is_one_clear_error(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo
) -> None:
    server = Server(tmp_path, base_env(fake.home, migrated_db_url), scheduler=False)
    try:
        proc = subprocess.run(
            [str(ORCH), "serve", "--port", str(server.port), "--no-scheduler"],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1
        assert f"cannot listen on 127.0.0.1:{server.port}" in proc.stderr
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_server_and_scheduler_and_requeues(
    tmp_path: Path, migrated_db_url: str, fake: FakeRepo, sig: int
) -> None:
    fake.set_plan({"*:development:*": {"hold": True}})
    server = Server(tmp_path, base_env(fake.home, migrated_db_url))
    key = server.client.post("/tasks", json={"repo": "demo", "title": "held"}).json()["key"]
    wait_for(lambda: fake.started(key, "development"), 60, "development starts")
    (job,) = server.client.get("/queue").json()["running"]["items"]
    # A followed log is an open request when the signal comes: it ends, told why, and the
    # server still stops cleanly.
    events: list[str] = []
    follower = httpx.Client(base_url=server.url, headers=server.client.headers, timeout=30)

    def follow() -> None:
        with follower.stream("GET", f"/tasks/{key}/jobs/{job['job']}/log?follow=1") as stream:
            events.extend(stream.iter_lines())

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        wait_for(lambda: any(e.startswith(("data: ", ": keep-alive")) for e in events), 30, "tail")
        assert server.stop(sig) == 0, server.output()
        reader.join(timeout=60)
    finally:
        follower.close()
    assert not reader.is_alive()
    assert "data: stream closed before the job finished" in events
    ((state, reasons, attempt),) = fake.query("SELECT state, reasons, attempt FROM jobs")
    assert state == "queued"
    assert attempt == 1
    assert "worker stopped" in str(reasons)
    assert fake.query("SELECT id FROM workers") == []


# ---- self-hosting ------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=120
    )
    return out.stdout


@pytest.fixture
def this_repo_copy(tmp_path: Path) -> Path:
    """This repository's files (tracked, and new ones not ignored) in a fresh git repo."""
    copy = tmp_path / "orchestrator"
    copy.mkdir()
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the work tree, or a submodule
        dst = copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    _git(copy, "init", "-q", "-b", "main")
    _git(copy, "config", "user.name", "Orchestrator Tests")
    _git(copy, "config", "user.email", "tests@orchestrator.invalid")
    _git(copy, "config", "commit.gpgsign", "false")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-q", "-m", "a copy of the orchestrator")
    return copy


@pytest.mark.timeout(600)
def test_selfhost_staging_smoke_runs_the_worktree_orchestrator(
    tmp_path: Path, db_url: str, this_repo_copy: Path
) -> None:
    # `orch repo add orchestrator . --self-hosting`, as a user runs it.
    env = base_env(tmp_path / "home", db_url)
    proc = subprocess.run(
        [str(ORCH), "repo", "add", "orchestrator", ".", "--self-hosting", "--json"],
        cwd=this_repo_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        repo = repo_ops.require_repo(conn, "orchestrator")
    engine.dispose()
    assert repo.self_hosting
    assert repo.staging_cmd is not None
    # The interpreter `orch` runs under (its script's shebang: python or python3 of this venv).
    assert Path(repo.staging_cmd[0]).parent == Path(sys.executable).parent
    assert repo.staging_cmd[1:] == ["-m", "orchestrator.selfhost_staging"]

    # The staging-runner runs that command in the task's worktree (here: the copy), with
    # the scrubbed environment the engine gives runners.
    folder = tmp_path / "task"
    folder.mkdir()
    ctx = RunContext(
        task_key="ORCHESTRATOR-1",
        repo_name="orchestrator",
        worktree=this_repo_copy,
        artifact_dir=folder,
        log_path=folder / "runs" / "1-deploy-staging-staging-runner.log",
        env={k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ},
        settings=load_settings(home=tmp_path / "home", database_url=db_url),
    )
    result = staging_runner.run_staging(ctx, repo.staging_cmd)
    log = ctx.log_path.read_text()
    assert result.outcome.value == "completed", log
    report = (folder / "15-staging-log.md").read_text()
    assert "staging_status: PASSED" in report, log
    assert f"ok: code from {this_repo_copy / 'src' / 'orchestrator'}" in log
    for path in ("/health", "/status", "/queue"):
        assert f"ok: GET {path}" in log
    assert "ok: stopped cleanly on SIGTERM" in log
    # Nothing of the staging instance is left behind in the copy.
    assert _git(this_repo_copy, "status", "--porcelain") == ""


def test_selfhost_staging_fails_closed_outside_an_orchestrator_tree(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.selfhost_staging", "--worktree", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "not an orchestrator work tree" in proc.stdout


def test_selfhost_staging_fails_when_the_instance_is_broken(
    tmp_path: Path, this_repo_copy: Path
) -> None:
    # A worktree whose /queue breaks: the smoke must say FAILED (and still stop it). The
    # planted definition comes last in the module, so it is the one the route calls.
    reads = this_repo_copy / "src" / "orchestrator" / "api" / "reads.py"
    assert "\ndef queue(" in reads.read_text()
    with reads.open("a") as fh:
        fh.write(
            '\n\ndef queue(*_a: object, **_k: object) -> None:\n    raise RuntimeError("planted")\n'
        )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.selfhost_staging"],
        cwd=this_repo_copy,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout
    assert "FAILED: GET /queue: 500, expected 200" in proc.stdout
    assert "ok: GET /health" in proc.stdout
    assert "ok: stopped cleanly on SIGTERM" in proc.stdout
