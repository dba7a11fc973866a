"""`orch run` and `orch worker` as real processes: sharing work, kill -9, SIGTERM, pause."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from api_server import Server

from orchestrator import proc_group, task_ops
from orchestrator.config import load_settings
from orchestrator.jobcontract import job_marker
from orchestrator.store import control, make_engine, queries
from orchestrator.store.schema import jobs as jobs_table

_T = TypeVar("_T")

ORCH = Path(sys.executable).with_name("orch")
FAKE = Path(__file__).resolve().parents[1] / "integration" / "agents" / "fake_agent.py"
TRUE = shutil.which("true") or "/bin/true"


class Env:
    """A home on a real database, a repo with fake agents, and `orch` to run against it."""

    def __init__(self, tmp_path: Path, db_url: str, repo: Path) -> None:
        self.tmp = tmp_path
        self.db_url = db_url
        self.home = tmp_path / "home"
        self.plan = tmp_path / "plan" / "plan.json"
        self.plan.parent.mkdir()
        self.plan.write_text("{}")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ORCH_") or k == "ORCH_SANDBOX_RO"
        }
        self.env.update(
            ORCH_HOME=str(self.home),
            ORCH_DATABASE_URL=db_url,
            ORCH_POLL_INTERVAL_S="0.2",
            ORCH_HEARTBEAT_INTERVAL_S="0.5",
            ORCH_JOB_LEASE_S="3",
            ORCH_KILL_GRACE_S="0.5",
            ORCH_MAX_PARALLEL_JOBS="4",
            ORCH_MAX_PARALLEL_JOBS_PER_REPO="4",
        )
        self.repo = repo
        self.procs: list[subprocess.Popen[str]] = []

    def orch(self, *args: str, code: int = 0, timeout: float = 120) -> str:
        proc = subprocess.run(
            [str(ORCH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        return proc.stdout

    def orch_all(self, *calls: tuple[str, ...], timeout: float = 120) -> list[str]:
        """Independent `orch` commands started together, each to exit 0; their outputs.
        A start-up is ~0.5 s of imports: side by side they cost about one."""
        procs = [
            subprocess.Popen(
                [str(ORCH), *args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in calls
        ]
        outs = []
        for args, proc in zip(calls, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, (args, out, err)
            outs.append(out)
        return outs

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(ORCH), *args],
            env=self.env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def register(self, plan: dict[str, Any]) -> None:
        self.plan.write_text(json.dumps(plan))
        agent = (
            f"command:{sys.executable} {FAKE} {self.plan} {{task}} {{stage}} "
            f"{{artifact_dir}} {{worktree}}"
        )
        args = [
            "repo",
            "add",
            "demo",
            str(self.repo),
            "--stages",
            "development,testing,deploy-staging",
            # The merge gate re-tests with this; the fake agents' repo has no suite. Not
            # `python -c pass`: on the serial gate's path, 50 times in the two-workers test.
            "--test-cmd",
            TRUE,
            # The fake agents read their plan and write their logs beside it.
            "--sandbox-rw",
            str(self.plan.parent),
        ]
        for stage in ("development", "testing", "deploy-staging"):
            args += ["--agent", f"{stage}={agent}"]
        self.orch(*args)

    def marker_of_running(self, stage: str) -> str:
        """The env marker of the running job at ``stage``: how its processes are found
        from here (inside the sandbox a process's pid is its namespace's own)."""
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                (job,) = [j for j in queries.list_jobs(conn, state="running") if j.stage == stage]
        finally:
            engine.dispose()
        return job_marker(job)

    def starts(self) -> list[str]:
        log = self.plan.parent / "STARTS.log"
        return log.read_text().split() if log.exists() else []

    def tasks(self) -> list[dict[str, Any]]:
        return list(json.loads(self.orch("task", "list", "--json")))

    def states(self) -> list[str]:
        """Each task's state, read from the database. What a wait polls: `orch task list`
        five times a second would start a Python process each time, taking the CPU from the
        workers being waited on; the test reads the CLI's answer once the wait is over."""
        return self._read(lambda conn: [t.state for t in queries.list_tasks(conn)])

    def heartbeats(self) -> list[float]:
        """The heartbeat times of the workers of the database, newest first."""
        return self._read(lambda conn: [w.heartbeat_at for w in control.list_workers(conn)])

    def _read(self, query: Callable[[sa.Connection], _T]) -> _T:
        """``query``'s answer on an engine of its own, disposed of at once."""
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return query(conn)
        finally:
            engine.dispose()

    def wait_for(
        self, what: Callable[[], bool], deadline_s: float = 240, poll_s: float = 0.2
    ) -> None:
        """Until ``what()``, looking every ``poll_s``: a file's look is cheap enough to make
        five times as often; a database's (an engine each time) takes CPU from the workers
        a long wait is for."""
        end = time.monotonic() + deadline_s
        while not what():
            if time.monotonic() > end:
                pytest.fail("the condition was not reached")
            for p in self.procs:
                if p.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    pytest.fail(
                        f"orch exited {p.returncode}: {p.stderr.read() if p.stderr else ''}"
                    )
            time.sleep(poll_s)


@pytest.fixture
def env(tmp_path: Path, db_url: str, make_repo: Callable[..., Path]) -> Iterator[Env]:
    assert ORCH.exists(), f"orch is not installed next to {sys.executable}"
    e = Env(tmp_path, db_url, make_repo(files={"README.md": "demo\n"}))
    yield e
    for p in e.procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


# Enough tasks that the three processes each get work and their deploys contend for the
# serial gate; a hundred proved nothing more and made this the suite's slowest test.
TASKS = 50


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_and_a_server_share_the_tasks(env: Env) -> None:
    env.register({"*:deploy-staging:*": {"sleep": 0.02}})
    first = env.spawn("worker")
    second = env.spawn("worker")
    server = Server(env.tmp, env.env)
    # Every process on the database before the first task: one still importing when the
    # work is filed may find none left to take (seen once on a loaded machine).
    env.wait_for(lambda: len(env.heartbeats()) == 3)
    # Half filed in-process while the workers run (a hundred `orch task add` start-ups
    # would only measure Python), half through the server's API: work filed by any of
    # them reaches every process on the database.
    eng = make_engine(env.db_url)
    settings = load_settings(home=env.home, database_url=env.db_url)
    for n in range(TASKS):
        if n % 2:
            task_ops.add_task(eng, settings, "demo", f"task {n}")
        else:
            reply = server.client.post("/tasks", json={"repo": "demo", "title": f"task {n}"})
            assert reply.status_code == 201, reply.text
    eng.dispose()
    env.wait_for(lambda: env.states() == ["done"] * TASKS)
    # The three stop side by side, and the CLI reads the board meanwhile.
    for p in (first, second):
        p.send_signal(signal.SIGTERM)
    assert server.stop() == 0
    assert [t["state"] for t in env.tasks()] == ["done"] * TASKS
    for p in (first, second):
        assert p.wait(timeout=60) == 0

    # No job ran twice: every (task, stage, attempt) started exactly once.
    starts = [s.rsplit(":", 1)[0] for s in env.starts()]
    assert len(starts) == 3 * TASKS
    assert len(set(starts)) == 3 * TASKS
    eng = make_engine(env.db_url)
    with eng.connect() as conn:
        rows = conn.execute(sa.select(jobs_table)).all()
        workers_used = {r.lease_owner for r in rows}
        history = {t.key: queries.list_transitions(conn, t.id) for t in queries.list_tasks(conn)}
    eng.dispose()
    extra = [(r.stage, r.attempt, r.outcome, r.reasons) for r in rows if r.attempt > 1]
    assert extra == []
    assert len(rows) == 3 * TASKS
    # Every process did work (lease_owner stays on the finished row).
    assert len({o for o in workers_used if o}) == 3
    # The serial gate: no two deploy-staging processes of the repo ever overlapped, as the
    # agents themselves saw the clock.
    spans = sorted(
        (float(start), float(end), task)
        for task, stage, start, end in (
            line.split() for line in (env.plan.parent / "SPANS.log").read_text().splitlines()
        )
        if stage == "deploy-staging"
    )
    assert len(spans) == TASKS
    for first, second in itertools.pairwise(spans):
        assert first[1] <= second[0], (first, second)
    assert all(
        [h.kind for h in hs] == ["create", "advance", "advance", "done"] for hs in history.values()
    )


def test_kill_9_mid_job_then_restart_completes_once(env: Env) -> None:
    env.register({"*:testing:*": {"hold_once": True}})
    key = env.orch("task", "add", "demo", "survive a crash").strip()
    run = env.spawn("run")
    env.wait_for(lambda: any(":testing:" in s for s in env.starts()), poll_s=0.05)
    env.wait_for(lambda: (env.plan.parent / f"HELD-{key}-testing").exists(), poll_s=0.05)
    marker = env.marker_of_running("testing")
    assert proc_group.find_marked(marker)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)

    env.orch("run", "--until-idle", timeout=240)
    listed, shown_out = env.orch_all(("task", "list", "--json"), ("task", "show", key, "--json"))
    (task,) = json.loads(listed)
    assert task["state"] == "done"
    shown = json.loads(shown_out)
    assert [h["kind"] for h in shown["history"]] == ["create", "advance", "advance", "done"]
    testing = [j for j in shown["jobs"] if j["stage"] == "testing"]
    assert len(testing) == 1
    assert testing[0]["attempt"] == 1
    assert any("recovered from" in r for r in testing[0]["reasons"])
    # Nothing of the killed run is left.
    assert proc_group.find_marked(marker) == []


def test_sigterm_requeues_running_jobs_without_spending_a_retry(env: Env) -> None:
    env.register({"*:development:*": {"hold_once": True}})
    key = env.orch("task", "add", "demo", "stop politely").strip()
    run = env.spawn("run")
    env.wait_for(lambda: any(":development:" in s for s in env.starts()), poll_s=0.05)
    env.wait_for(lambda: (env.plan.parent / f"HELD-{key}-development").exists(), poll_s=0.05)
    marker = env.marker_of_running("development")
    assert proc_group.find_marked(marker)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 0
    assert proc_group.find_marked(marker) == []
    shown = json.loads(env.orch("task", "show", key, "--json"))
    (job,) = shown["jobs"]
    assert (job["state"], job["attempt"]) == ("queued", 1)
    assert shown["developer_retries"] == 0
    env.orch("run", "--until-idle", timeout=240)
    assert env.tasks()[0]["state"] == "done"


def test_drain_waits_for_the_running_job(env: Env) -> None:
    env.register({"*:development:*": {"hold": True}})
    key = env.orch("task", "add", "demo", "finish what you started").strip()
    run = env.spawn("run", "--drain")
    env.wait_for(lambda: any(":development:" in s for s in env.starts()), poll_s=0.05)
    run.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert run.poll() is None  # still draining: the job is running
    (env.plan.parent / f"RELEASE-{key}-development-1").write_text("go")
    assert run.wait(timeout=60) == 0
    shown = json.loads(env.orch("task", "show", key, "--json"))
    dev = [j for j in shown["jobs"] if j["stage"] == "development"]
    assert [(j["state"], j["outcome"]) for j in dev] == [("finished", "completed")]
    # It stopped claiming: the next stage is queued, not started.
    assert [j["state"] for j in shown["jobs"] if j["stage"] == "testing"] == ["queued"]


def test_pause_and_resume(env: Env) -> None:
    env.register({})
    env.orch_all(("pause",), ("task", "add", "demo", "wait for resume"))
    run = env.spawn("run")
    # Loop ticks counted, not slept for (a start-up slowed by a loaded machine could eat a
    # fixed sleep whole): the loop's first turn sends a heartbeat, then looks for work; the
    # next heartbeat is a later turn, 0.5 s on. So the paused worker has looked at least
    # once by then, and every 0.2 s (ORCH_POLL_INTERVAL_S) in between: three looks, as a rule.
    env.wait_for(lambda: len(env.heartbeats()) == 1, poll_s=0.05)
    (first,) = env.heartbeats()
    env.wait_for(lambda: env.heartbeats()[0] > first, poll_s=0.05)
    assert env.starts() == []
    assert json.loads(env.orch("task", "list", "--json"))[0]["state"] == "active"
    env.orch("resume")
    env.wait_for(lambda: env.states() == ["done"])
    run.send_signal(signal.SIGTERM)
    assert env.tasks()[0]["state"] == "done"
    assert run.wait(timeout=60) == 0


def test_alerts_listed(env: Env) -> None:
    env.register({"*:testing:*": {"verdict": "FAIL"}})
    env.env["ORCH_DEVELOPER_RETRY_BUDGET"] = "0"
    env.orch("task", "add", "demo", "always red")
    env.orch("run", "--until-idle")
    as_json, as_text = env.orch_all(("alerts", "--json"), ("alerts",))
    alerts = json.loads(as_json)
    assert [a["kind"] for a in alerts] == ["developer-budget-exhausted"]
    assert alerts[0]["task"] == "DEMO-1"
    assert "DEMO-1" in as_text
