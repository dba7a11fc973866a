"""The engine, Zuul style: real git, a real database, fake agents as real child processes.

Fake agents can be held and released, so each test decides the order things happen in;
every edge of STAGE_TRANSITIONS is driven and its artifacts, reasons and alerts checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator import proc_group, repo_ops, task_ops
from orchestrator.config import Settings, load_settings
from orchestrator.domain.stages import Stage
from orchestrator.engine.queue import queue_job
from orchestrator.engine.worker import Worker
from orchestrator.errors import UsageError
from orchestrator.gitops import git as gitcmd
from orchestrator.jobcontract import job_marker
from orchestrator.store import alert_rows, control, make_engine, migrate, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.schema import jobs as jobs_table

FAKE = Path(__file__).parent / "agents" / "fake_agent.py"
STAGES = ["development", "testing", "deploy-staging"]
FULL = [*STAGES, "deploy", "post-deploy-monitor"]


class Harness:
    """A home, a repo, a plan for the fake agents, and a worker to run."""

    def __init__(self, tmp_path: Path, db_url: str, repo: Path, **overrides: Any) -> None:
        self.tmp = tmp_path
        self.plan_path = tmp_path / "plan" / "plan.json"
        self.plan_path.parent.mkdir()
        self.plan: dict[str, Any] = {}
        self.save_plan()
        values = dict(
            home=tmp_path / "home",
            database_url=db_url,
            infra_retry_backoff_s=0.05,
            developer_retry_budget=2,
            infra_retry_budget=2,
            merge_gate_infra_retry_budget=2,
            merge_gate_infra_retry_backoff_s=0.05,
            agent_timeout_s=30,
            kill_grace_s=0.5,
            poll_interval_s=0.2,
            heartbeat_interval_s=0.5,
            job_lease_s=5,
        )
        values.update(overrides)
        self.settings: Settings = load_settings(**values)
        self.engine = make_engine(db_url)
        # A database copied from the migrated template: one plain read finds it current
        # (Alembic's upgrade, a no-op here, took ~10 ms of every test).
        migrate.ensure_current(self.engine)
        self.repo_path = repo
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None

    def agent(self) -> str:
        return (
            f"command:{sys.executable} {FAKE} {self.plan_path} {{task}} {{stage}} "
            f"{{artifact_dir}} {{worktree}}"
        )

    def add_repo(self, stages: list[str] = STAGES, **agents: str) -> None:
        specs = [f"{s}={agents.get(s.replace('-', '_'), self.agent())}" for s in stages]
        # The merge gate re-tests the merged tree with the repo's test command: here a
        # command that passes, since the fake agents' repo has no suite.
        repo_ops.add_repo(
            self.engine,
            "demo",
            self.repo_path,
            self.repo_input(stages=stages, agents=specs, test_cmd=f"{sys.executable} -c pass"),
        )

    def repo_input(self, **fields: Any) -> repo_ops.RepoInput:
        """A RepoInput whose sandbox lets the fake agents read their plan and write their
        logs beside it (the plan folder: the tests' own, trusted)."""
        return repo_ops.RepoInput(sandbox_rw=[str(self.plan_path.parent)], **fields)

    def save_plan(self) -> None:
        self.plan_path.write_text(json.dumps(self.plan))

    def add_task(self, title: str = "T", patch: bytes | None = None) -> str:
        return task_ops.add_task(self.engine, self.settings, "demo", title, "body", patch).task.key

    def release(self, key: str, stage: str, attempt: int = 1) -> None:
        (self.plan_path.parent / f"RELEASE-{key}-{stage}-{attempt}").write_text("go")

    def starts(self) -> list[str]:
        log = self.plan_path.parent / "STARTS.log"
        return log.read_text().split() if log.exists() else []

    def run_until_idle(self) -> None:
        Worker(self.settings, self.engine).run(until_idle=True)

    def start(self) -> Worker:
        self.worker = Worker(self.settings, self.engine)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None and self.thread is not None:
            self.worker.stop()
            self.thread.join(timeout=60)
            assert not self.thread.is_alive()

    def task(self, key: str) -> Any:
        with self.engine.connect() as conn:
            return queries.get_task(conn, key)

    def history(self, key: str) -> list[Any]:
        with self.engine.connect() as conn:
            t = queries.get_task(conn, key)
            assert t is not None
            return queries.list_transitions(conn, t.id)

    def jobs(self, key: str) -> list[Any]:
        with self.engine.connect() as conn:
            t = queries.get_task(conn, key)
            assert t is not None
            return queries.list_jobs(conn, task_id=t.id)

    def alerts(self) -> list[Any]:
        with self.engine.connect() as conn:
            return alert_rows.list_alerts(conn)

    def folder(self, key: str) -> Path:
        return self.settings.tasks_dir / key

    def wait_for(self, what: Callable[[], bool], deadline_s: float = 60) -> None:
        end = time.monotonic() + deadline_s
        while not what():
            if time.monotonic() > end:
                pytest.fail("the condition was not reached")
            time.sleep(0.05)


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


def kinds(history: list[Any]) -> list[str]:
    return [t.kind for t in history]


def test_straight_through_to_done(h: Harness) -> None:
    h.add_repo(FULL)
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("post-deploy-monitor", "done")
    assert kinds(h.history(key)) == ["create", "advance", "advance", "advance", "advance", "done"]
    for name in (
        "10-dev-report.md",
        "13-test-report.md",
        "15-staging-log.md",
        "17-deploy-log.md",
        "18-monitor-report.md",
    ):
        assert (h.folder(key) / name).exists(), name
    # Every job has its log under runs/ and a finished state.
    jobs = h.jobs(key)
    assert all(j.state == "finished" and j.outcome == "completed" for j in jobs)
    assert all(Path(j.log_path).exists() for j in jobs if j.log_path)
    # Done: the worktree is removed, the branch with the work stays.
    assert not (h.settings.worktrees_dir / "demo" / key).exists()


def test_a_straight_run_reads_no_records_and_its_development_gate_no_git(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each job's gates read the artifacts it produced from memory: the task's records are
    # not read from the database (they were, on every job). A first development attempt's
    # commit tells the gate the branch's change: no `git diff` of the branch (was: two).
    h.add_repo(FULL)
    reads: list[int] = []
    real_records = jobq.recorded_artifacts

    def records(conn: sa.Connection, task_id: int) -> dict[str, set[str]]:
        reads.append(task_id)
        return real_records(conn, task_id)

    monkeypatch.setattr(jobq, "recorded_artifacts", records)
    branch_diffs: list[tuple[str, ...]] = []
    real_git = gitcmd.git

    def git(args: Any, cwd: Path, **kw: Any) -> gitcmd.GitResult:
        if "diff" in args and "--cached" not in args and any("..." in a for a in args):
            branch_diffs.append(tuple(args))
        return real_git(args, cwd, **kw)

    monkeypatch.setattr(gitcmd, "git", git)
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("post-deploy-monitor", "done")
    assert reads == []
    assert branch_diffs == []
    dev = h.history(key)[1]
    assert "check_branch_has_diff: branch diff: 1 file changed, 1 insertion(+)" in dev.reasons


def test_rollback_attaches_the_failing_report_then_passes(h: Harness) -> None:
    h.plan = {"*:testing:1": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    hist = h.history(key)
    assert kinds(hist) == ["create", "advance", "rollback", "advance", "advance", "done"]
    rollback = hist[2]
    assert rollback.to_stage == "development"
    assert any("13-test-report.md: result=FAILED" in r for r in rollback.reasons)
    assert h.task(key).developer_retries == 1
    # The second developer attempt was told why the first failed.
    dev_jobs = [j for j in h.jobs(key) if j.stage == "development"]
    assert [j.attempt for j in dev_jobs] == [1, 2]
    prompt = (h.folder(key) / "runs" / f"{dev_jobs[1].id}-prompt.md").read_text()
    assert "The previous attempt failed" in prompt
    assert "result: FAILED" in prompt


def test_rollback_budget_spent_blocks_with_alert(h: Harness) -> None:
    h.plan = {"*:testing:*": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("testing", "blocked")
    assert kinds(h.history(key)).count("rollback") == 2
    assert any("developer retry budget spent (2)" in r for r in t.reasons)
    assert [a.kind for a in h.alerts()] == ["developer-budget-exhausted"]


def test_tool_error_defers_without_blaming_the_code(h: Harness) -> None:
    # The first testing attempt hangs past the agent timeout: a tool error, not a FAIL.
    h.settings = load_settings(**{**asdict(h.settings), "agent_timeout_s": 1.0})
    h.plan = {"*:testing:1": {"sleep": 60}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    hist = h.history(key)
    assert kinds(hist) == ["create", "advance", "defer", "advance", "done"]
    defer = hist[2]
    assert (defer.from_stage, defer.to_stage, defer.to_state) == ("testing", "testing", "deferred")
    assert any("tool error timeout" in r for r in defer.reasons)
    t = h.task(key)
    assert t.developer_retries == 0
    timed_out = next(j for j in h.jobs(key) if j.outcome == "timeout")
    assert proc_group.find_marked(job_marker(timed_out)) == []


def test_infra_budget_spent_fails_closed_and_alerts(h: Harness) -> None:
    # Every testing attempt sleeps 60 s: any limit ends each in a timeout, however loaded
    # the machine.
    h.settings = load_settings(**{**asdict(h.settings), "agent_timeout_s": 0.2})
    h.plan = {"*:testing:*": {"sleep": 60}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("testing", "blocked")
    assert kinds(h.history(key)).count("defer") == 2
    assert any("treated as FAILED" in r for r in t.reasons)
    assert [a.kind for a in h.alerts()] == ["infra-budget-exhausted"]
    # Deferred jobs waited their backoff: each retry's not_before is later than the last end.
    testing = [j for j in h.jobs(key) if j.stage == "testing"]
    assert len(testing) == 3


@pytest.mark.parametrize("variant", ["missing", "contradicting"])
def test_bad_artifacts_never_pass(h: Harness, variant: str) -> None:
    action = {"no_artifact": True} if variant == "missing" else {"contradict": True}
    h.plan = {"*:testing:*": action}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert t.state == "blocked"
    assert "deploy-staging" not in {j.stage for j in h.jobs(key)}


def test_deploy_failure_blocks_for_a_human(h: Harness) -> None:
    h.plan = {"*:deploy:*": {"verdict": "FAIL"}}
    h.save_plan()
    h.add_repo(FULL)
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("deploy", "blocked")
    assert [a.kind for a in h.alerts()] == ["task-blocked"]
    # A blocked task keeps its worktree for the human to look at.
    assert (h.settings.worktrees_dir / "demo" / key).exists()


def test_cancel_kills_the_running_job(h: Harness) -> None:
    h.plan = {"*:development:*": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.start()
    h.wait_for(lambda: len(h.starts()) == 1)
    running = next(j for j in h.jobs(key) if j.state == "running")
    h.wait_for(lambda: bool(proc_group.find_marked(job_marker(running))))
    task_ops.cancel_task(h.engine, key, reason="changed my mind")
    h.wait_for(lambda: all(j.state == "finished" for j in h.jobs(key)))
    assert proc_group.find_marked(job_marker(running)) == []
    assert h.task(key).state == "cancelled"
    assert kinds(h.history(key)) == ["create", "cancel"]


def test_manual_stage_waits_for_approval_and_is_still_gated(h: Harness, tmp_path: Path) -> None:
    h.add_repo(STAGES, deploy_staging="manual")
    key = h.add_task()
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("deploy-staging", "blocked")
    assert any("awaiting human" in r for r in t.reasons)
    # An approval with an artifact that does not pass is refused.
    bad = tmp_path / "bad.md"
    bad.write_text("staging_status: FAILED\n")
    with pytest.raises(UsageError, match="does not pass"):
        task_ops.approve_task(h.engine, h.settings, key, artifact=bad.read_bytes())
    good = tmp_path / "good.md"
    good.write_text("---\nstaging_status: PASSED\n---\nchecked by hand\n")
    task_ops.approve_task(h.engine, h.settings, key, artifact=good.read_bytes())
    h.run_until_idle()
    assert h.task(key).state == "done"
    assert kinds(h.history(key))[-2:] == ["approve", "done"]


def test_patch_developer_applies_then_retry_with_new_patch(h: Harness) -> None:
    good = (
        b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        b"@@ -1 +1,2 @@\n demo\n+hello\n"
    )
    bad = good.replace(b" demo\n", b" nothing like this\n")
    h.add_repo(STAGES, development="patch")
    key = h.add_task(patch=bad)
    h.settings = load_settings(**{**asdict(h.settings), "developer_retry_budget": 0})
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("development", "blocked")
    assert any("does not apply" in r for r in t.reasons)
    task_ops.retry_task(h.engine, h.settings, key, patch=good)
    h.run_until_idle()
    assert h.task(key).state == "done"
    # The worktree and the task branch are removed when the task is done: read main.
    assert not (h.settings.worktrees_dir / "demo" / key).exists()
    import subprocess

    shown = subprocess.run(
        ["git", "show", "main:README.md"],
        cwd=h.repo_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert shown.stdout == "demo\nhello\n"


def test_a_patch_sent_back_by_red_tests_waits_for_a_fix(h: Harness) -> None:
    # The patch applies, the suite fails. Applying the same patch again can change nothing:
    # the task waits for a person with the real reason, and spends no developer retry.
    good = (
        b"diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n"
        b"@@ -1 +1,2 @@\n demo\n+hello\n"
    )
    repo_ops.add_repo(
        h.engine,
        "demo",
        h.repo_path,
        h.repo_input(
            stages=STAGES,
            agents=["development=patch", "testing=test-runner", f"deploy-staging={h.agent()}"],
            test_cmd=f'{sys.executable} -c "raise SystemExit(1)"',
        ),
    )
    key = h.add_task(patch=good)
    h.run_until_idle()
    t = h.task(key)
    assert (t.stage, t.state) == ("development", "blocked"), t.reasons
    assert t.developer_retries == 1  # the rollback from testing, and nothing after it
    assert any("already on the task branch" in r for r in t.reasons), t.reasons
    assert any(r.startswith("sent back because:") and "testing: FAIL" in r for r in t.reasons)
    assert any(f"orch task retry {key} --patch FILE" in r for r in t.reasons)
    assert [a.kind for a in h.alerts()] == ["awaiting-human"]


def test_pause_stops_claiming(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop looks for work every 50 ms here: its looks, not a length of time, are counted.
    h.settings = load_settings(**{**asdict(h.settings), "poll_interval_s": 0.05})
    h.add_repo()
    with h.engine.begin() as conn:
        control.set_paused(conn, True, now=time.time())
    key = h.add_task()
    looks: list[bool] = []
    real_is_paused = control.is_paused

    def seen_by_claim(conn: sa.Connection) -> bool:
        paused = real_is_paused(conn)
        looks.append(paused)
        return paused

    monkeypatch.setattr(control, "is_paused", seen_by_claim)
    h.start()
    # A few claims looked, and each found the pause: nothing may be claimed while paused.
    h.wait_for(lambda: looks.count(True) >= 3)
    assert [j.state for j in h.jobs(key)] == ["queued"]
    assert h.starts() == []
    with h.engine.begin() as conn:
        control.set_paused(conn, False, now=time.time())
    h.wait_for(lambda: h.task(key).state == "done")


def test_pause_during_a_job_stops_its_end_claiming_the_next(h: Harness) -> None:
    # A job's end claims its task's next job in the same transaction; `orch pause` given
    # while the job ran is read by that claim (issue 19 moved the read into the claim's
    # one statement): the next job is queued, not run.
    h.plan = {"*:development:1": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.start()
    h.wait_for(lambda: any(s.startswith(f"{key}:development:1:") for s in h.starts()))
    with h.engine.begin() as conn:
        control.set_paused(conn, True, now=time.time())
    h.release(key, "development")
    h.wait_for(lambda: h.task(key).stage == "testing")
    # The end and the claim are one transaction: what it left is final while paused.
    assert [(j.stage, j.state) for j in h.jobs(key)] == [
        ("development", "finished"),
        ("testing", "queued"),
    ]
    with h.engine.begin() as conn:
        control.set_paused(conn, False, now=time.time())
    h.wait_for(lambda: h.task(key).state == "done")


@pytest.mark.parametrize("case", ["dead-process-on-this-host", "expired-lease-elsewhere"])
def test_recovery_requeues_without_spending_a_retry(h: Harness, case: str) -> None:
    h.add_repo()
    key = h.add_task()
    here = Worker(h.settings, h.engine).host
    if case == "dead-process-on-this-host":
        # Its lease is still valid, but its process is gone: taken back at once.
        owner, host, lease_s = f"{here}:999999999:1", here, 300.0
    else:
        # Another machine's worker whose lease ran out; its processes are not ours to kill.
        owner, host, lease_s = "elsewhere:4242:1", "elsewhere", -1.0
    with h.engine.begin() as conn:
        claimed = jobq.claim_jobs(
            conn,
            owner=owner,
            host=host,
            now=time.time(),
            lease_s=lease_s,
            limits=jobq.ClaimLimits(4, 4),
        )
    assert len(claimed) == 1
    h.run_until_idle()
    t = h.task(key)
    assert t.state == "done"
    assert t.developer_retries == 0
    assert t.infra_retries == 0
    dev = [j for j in h.jobs(key) if j.stage == "development"]
    assert len(dev) == 1
    assert any(f"recovered from {owner}" in r for r in dev[0].reasons)
    assert [s.split(":")[1] for s in h.starts()].count("development") == 1


def test_recovery_reaps_only_this_hosts_leftover_processes(h: Harness) -> None:
    # Two jobs whose leases ran out, each with a live process group recorded: one started on
    # this host, one on another machine (whose pgid means nothing here: it may be any of our
    # own processes). Both are taken back; only this host's group is killed.
    h.add_repo()
    keys = [h.add_task("here"), h.add_task("there")]
    w = Worker(h.settings, h.engine)
    sleepers = {
        key: subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
        )
        for key in keys
    }
    try:
        for key, host in zip(keys, [w.host, "elsewhere"], strict=True):
            with h.engine.begin() as conn:
                task = queries.get_task(conn, key)
                assert task is not None
                (job,) = jobq.claim_jobs(
                    conn,
                    owner=f"{host}:4242:1",
                    host=host,
                    now=time.time(),
                    lease_s=-1.0,
                    limits=jobq.ClaimLimits(4, 4),
                    task_id=task.id,
                )
                conn.execute(
                    sa.update(jobs_table)
                    .where(jobs_table.c.id == job.id)
                    .values(pgid=sleepers[key].pid)
                )
        assert w.recover() == 2
        assert sleepers[keys[0]].wait(timeout=30) is not None  # this host's: killed
        assert sleepers[keys[1]].poll() is None  # the other host's pgid: left alone
        for key in keys:
            (dev,) = h.jobs(key)
            assert dev.state == "queued"
    finally:
        for p in sleepers.values():
            p.kill()
            p.wait()


def test_a_live_workers_job_is_not_taken(h: Harness) -> None:
    h.add_repo()
    h.add_task()
    here = Worker(h.settings, h.engine).host
    with h.engine.begin() as conn:
        (job,) = jobq.claim_jobs(
            conn,
            owner=f"{here}:{os.getpid()}:1",
            host=here,
            now=time.time(),
            lease_s=300,
            limits=jobq.ClaimLimits(4, 4),
        )
    assert Worker(h.settings, h.engine).recover() == 0
    with h.engine.connect() as conn:
        assert queries.get_job(conn, job.id).state == "running"  # type: ignore[union-attr]


def test_an_own_job_no_thread_runs_lapses_and_is_taken_back(h: Harness) -> None:
    # What a job thread that gave up leaves (the database was gone when its job ended): the
    # job still running under this worker's lease. Heartbeats renew only the jobs the worker
    # really runs, so the lease runs out and recovery re-queues the job, no retry spent.
    h.add_repo()
    key = h.add_task()
    w = Worker(h.settings, h.engine)
    now = time.time()
    with h.engine.begin() as conn:
        (job,) = jobq.claim_jobs(
            conn, owner=w.id, host=w.host, now=now, lease_s=30, limits=jobq.ClaimLimits(4, 4)
        )
    w._heartbeat(now + 1)
    with h.engine.connect() as conn:
        held = queries.get_job(conn, job.id)
    assert held is not None
    assert held.lease_expires_at == pytest.approx(now + 30)  # not renewed
    assert w.recover() == 0  # its lease is still valid
    assert w.recover() == 0
    with h.engine.begin() as conn:
        conn.execute(
            sa.update(jobs_table).where(jobs_table.c.id == job.id).values(lease_expires_at=now - 1)
        )
    assert w.recover() == 1
    with h.engine.connect() as conn:
        back = queries.get_job(conn, job.id)
    assert back is not None
    assert back.state == "queued"
    assert back.attempt == 1
    w.run(until_idle=True)
    assert h.task(key).state == "done"
    assert h.task(key).developer_retries == 0


def test_a_job_taken_over_elsewhere_is_stopped_here(h: Harness) -> None:
    # Our lease ran out (a database outage longer than the lease, a stalled process) and
    # another worker took the job: the next heartbeat sees it, and this copy of the job is
    # killed instead of running twice.
    # No timeout of its own can end the held agent within the test: only the kill can.
    h.settings = load_settings(**{**asdict(h.settings), "agent_timeout_s": 3000})
    h.plan = {"*:development:*": {"hold": True}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.start()
    h.wait_for(lambda: any(":development:" in s for s in h.starts()))
    with h.engine.begin() as conn:
        (job,) = [j for j in queries.list_jobs(conn) if j.state == "running"]
        # The agent's processes, seen from here (its own pid is its sandbox's): by marker.
        marker = job_marker(job)
        assert proc_group.find_marked(marker)
        assert jobq.requeue(conn, job.id, now=time.time(), reason="taken over")
        (again,) = jobq.claim_jobs(
            conn,
            owner="elsewhere:1:1",
            host="elsewhere",
            now=time.time(),
            lease_s=300,
            limits=jobq.ClaimLimits(4, 4),
        )
    assert again.id == job.id
    h.wait_for(lambda: proc_group.find_marked(marker) == [])
    h.stop()
    with h.engine.connect() as conn:
        row = queries.get_job(conn, job.id)
    assert row is not None
    # Nothing was written by the old owner: the job is the other worker's, still running.
    assert (row.state, row.lease_owner) == ("running", "elsewhere:1:1")
    assert h.task(key).stage == "development"


def test_heartbeat_tells_a_taken_job_from_a_finished_one(h: Harness) -> None:
    h.add_repo()
    h.add_task()
    h.add_task("second")
    now = time.time()
    limits = jobq.ClaimLimits(4, 4)
    with h.engine.begin() as conn:
        done, taken = jobq.claim_jobs(
            conn, owner="a:1:1", host="a", now=now, lease_s=30, limits=limits
        )
        # One ends in the instant before the heartbeat: not renewed, but not taken either.
        assert jobq.finish_job(
            conn,
            done.id,
            "a:1:1",
            now=now,
            outcome="completed",
            verdict=None,
            reasons=[],
            exit_code=0,
        )
        # The other was re-queued and claimed by another worker.
        assert jobq.requeue(conn, taken.id, now=now, reason="lease ran out")
        (again,) = jobq.claim_jobs(
            conn, owner="b:2:2", host="b", now=now, lease_s=30, limits=limits
        )
        assert again.id == taken.id
        lost = jobq.heartbeat(conn, "a:1:1", now=now + 1, lease_s=30, job_ids=[done.id, taken.id])
    assert lost == {taken.id}


def test_fenced_out_worker_writes_nothing(h: Harness) -> None:
    h.add_repo()
    key = h.add_task()
    now = time.time()
    with h.engine.begin() as conn:
        (job,) = jobq.claim_jobs(
            conn, owner="a:1:1", host="a", now=now, lease_s=30, limits=jobq.ClaimLimits(4, 4)
        )
        assert jobq.requeue(conn, job.id, now=now, reason="taken over")
        (again,) = jobq.claim_jobs(
            conn, owner="b:2:2", host="b", now=now, lease_s=30, limits=jobq.ClaimLimits(4, 4)
        )
        assert again.id == job.id
        # The first owner's late bookkeeping matches no row.
        assert not jobq.finish_job(
            conn,
            job.id,
            "a:1:1",
            now=now,
            outcome="completed",
            verdict="PASS",
            reasons=[],
            exit_code=0,
        )
        assert jobq.finish_job(
            conn,
            job.id,
            "b:2:2",
            now=now,
            outcome="completed",
            verdict="PASS",
            reasons=[],
            exit_code=0,
        )
    assert h.task(key).state == "active"


def test_reaper_kills_a_job_whose_own_timeout_failed(h: Harness) -> None:
    # The settings refuse a reaper limit below the agent timeout; build them unchecked to
    # stand for a job whose own timeout did not fire (a hung git call, a lost timer).
    values = {**asdict(h.settings), "agent_timeout_s": 600.0, "reaper_max_running_s": 1.0}
    h.settings = Settings(**values)  # made directly: no check of the invariants
    h.plan = {"*:testing:1": {"sleep": 120}}
    h.save_plan()
    h.add_repo()
    key = h.add_task()
    h.run_until_idle()
    hist = h.history(key)
    assert kinds(hist) == ["create", "advance", "defer", "advance", "done"]
    assert any("reaper: ran longer than reaper_max_running_s" in r for r in hist[2].reasons)
    reaped = next(j for j in h.jobs(key) if j.outcome == "timeout")
    assert proc_group.find_marked(job_marker(reaped)) == []


def test_serial_gate_is_held_between_a_tasks_deploy_and_its_watch(h: Harness) -> None:
    h.add_repo(FULL)
    a, b = h.add_task("A"), h.add_task("B")
    now = time.time()
    with h.engine.begin() as conn:
        ta, tb = queries.get_task(conn, a), queries.get_task(conn, b)
        assert ta is not None
        assert tb is not None
        for t in (ta, tb):
            jobq.drop_queued(conn, t.id, now=now, reason="test set-up")
        # A has deployed and waits (deferred) for its health watch; B wants to merge.
        queries.update_task(conn, ta.id, now=now, stage="post-deploy-monitor", state="deferred")
        queries.update_task(conn, tb.id, now=now, stage="deploy-staging")
        repo = queries.get_repo(conn, "demo")
        assert repo is not None
        tb = queries.get_task(conn, b)
        assert tb is not None
        queue_job(conn, repo, tb, Stage.DEPLOY_STAGING, now=now)
    limits = jobq.ClaimLimits(4, 4)
    hold = ("deploy", "post-deploy-monitor")
    with h.engine.begin() as conn:
        assert jobq.serial_gate_holders(conn, hold) == {"demo": ta.id}
        assert (
            jobq.claim_jobs(
                conn, owner="w:1:1", host="w", now=now, lease_s=30, limits=limits, hold_stages=hold
            )
            == []
        )
    with h.engine.begin() as conn:
        queries.update_task(conn, ta.id, now=now, state="done")
    with h.engine.begin() as conn:
        (claimed,) = jobq.claim_jobs(
            conn, owner="w:1:1", host="w", now=now, lease_s=30, limits=limits, hold_stages=hold
        )
    assert (claimed.task_id, claimed.stage) == (tb.id, "deploy-staging")


def test_start_up_prunes_worktrees_of_tasks_that_are_gone(h: Harness) -> None:
    from orchestrator.gitops import worktrees

    h.add_repo()
    key = h.add_task()
    task_ops.cancel_task(h.engine, key)
    for orphan in ("DEMO-99", key):
        made = worktrees.ensure_worktree(
            h.repo_path, "main", h.settings.worktrees_dir, "demo", orphan
        )
        assert made.path is not None
    blocked = h.add_task("kept while blocked")
    with h.engine.begin() as conn:
        bt = queries.get_task(conn, blocked)
        assert bt is not None
        jobq.drop_queued(conn, bt.id, now=time.time(), reason="test set-up")
        queries.update_task(conn, bt.id, now=time.time(), state="blocked")
    kept = worktrees.ensure_worktree(h.repo_path, "main", h.settings.worktrees_dir, "demo", blocked)
    assert kept.path is not None
    h.run_until_idle()
    assert not (h.settings.worktrees_dir / "demo" / "DEMO-99").exists()
    assert not (h.settings.worktrees_dir / "demo" / key).exists()
    assert (h.settings.worktrees_dir / "demo" / blocked).exists()
