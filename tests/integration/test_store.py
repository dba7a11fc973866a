"""The store against a real database: SQLite by default, PostgreSQL with ORCH_TEST_DATABASE_URL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.config import load_settings
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Stage, State, TransitionKind
from orchestrator.domain.verdicts import VerdictStatus
from orchestrator.engine.queue import queue_job
from orchestrator.errors import NotFoundError
from orchestrator.store import (
    PoolSizes,
    alert_rows,
    current_revision,
    head_revision,
    is_current,
    is_transient,
    make_engine,
    normalize_url,
    queries,
    reader,
    upgrade,
)
from orchestrator.store import schema as s
from orchestrator.store.bootstrap import open_engine
from orchestrator.store.migrate import downgrade
from orchestrator.store.rows import JobRow, RepoRow, TaskRow

STAGES = ["development", "testing", "deploy-staging"]
AGENTS = {"development": "patch", "testing": "test-runner", "deploy-staging": "staging-runner"}


def sqlite_only(engine: sa.Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite-specific behaviour")


def add_repo(conn: sa.Connection, name: str = "demo", prefix: str = "DEMO") -> RepoRow:
    return queries.insert_repo(
        conn,
        name=name,
        path=f"/srv/{name}",
        key_prefix=prefix,
        now=100.0,
        stages=STAGES,
        agents=AGENTS,
    )


def add_task(
    conn: sa.Connection,
    repo_id: int,
    now: float = 200.0,
    *,
    title: str = "Fix it",
    body: str = "Details",
) -> TaskRow:
    return queries.insert_task(
        conn, repo_id=repo_id, title=title, body=body, stage="development", now=now
    )


# ---- repos -------------------------------------------------------------------------------


def test_repo_round_trip(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = queries.insert_repo(
            conn,
            name="demo",
            path="/srv/demo",
            key_prefix="DEMO",
            now=100.0,
            remote="git@example.invalid:demo.git",
            test_cmd=("pytest", "-q"),
            health_url="http://127.0.0.1:9/health",
            stages=STAGES,
            agents=AGENTS,
            agent_env=["ANTHROPIC_API_KEY"],
            options={"coverage_threshold": 80.5, "regression_markers": ["slow", "net"]},
            self_hosting=True,
        )
    with engine.connect() as conn:
        by_name = queries.get_repo(conn, "demo")
        by_id = queries.get_repo_by_id(conn, repo.id)
    assert by_name == by_id == repo
    assert repo.main_branch == "main"
    assert repo.test_cmd == ["pytest", "-q"]
    assert repo.staging_cmd is None
    assert repo.agents == AGENTS
    assert repo.agent_env == ["ANTHROPIC_API_KEY"]
    assert repo.options == {"coverage_threshold": 80.5, "regression_markers": ["slow", "net"]}
    assert repo.self_hosting is True
    assert repo.next_task_number == 1
    assert isinstance(repo.created_at, float)
    assert repo.created_at == repo.updated_at == 100.0


def test_json_none_is_sql_null(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        add_repo(conn)
        nulls = conn.execute(
            sa.select(sa.func.count()).select_from(s.repos).where(s.repos.c.test_cmd.is_(None))
        ).scalar_one()
    assert nulls == 1


def test_get_repo_missing_is_none(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert queries.get_repo(conn, "nope") is None
        assert queries.get_repo_by_id(conn, 12345) is None


def test_list_repos_by_name(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        add_repo(conn, "zeta", "ZETA")
        add_repo(conn, "alpha", "ALPHA")
        assert [r.name for r in queries.list_repos(conn)] == ["alpha", "zeta"]


def test_repo_name_and_prefix_unique(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        add_repo(conn, "demo", "DEMO")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        add_repo(conn, "demo", "OTHER")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        add_repo(conn, "other", "DEMO")


def test_update_repo(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        add_repo(conn)
        repo = queries.update_repo(
            conn, "demo", now=150.0, main_branch="trunk", deploy_cmd=("make", "deploy")
        )
    assert repo.main_branch == "trunk"
    assert repo.deploy_cmd == ["make", "deploy"]
    assert repo.updated_at == 150.0
    assert repo.created_at == 100.0
    with engine.connect() as conn:
        assert queries.get_repo(conn, "demo") == repo


def test_update_repo_refuses_unknown_and_fixed_columns(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        add_repo(conn)
        with pytest.raises(ValueError, match="unknown repos column"):
            queries.update_repo(conn, "demo", now=1.0, colour="blue")
        with pytest.raises(ValueError, match="not updatable: next_task_number"):
            queries.update_repo(conn, "demo", now=1.0, next_task_number=7)
        with pytest.raises(NotFoundError):
            queries.update_repo(conn, "nope", now=1.0, path="/x")


# ---- tasks -------------------------------------------------------------------------------


def test_task_keys_count_up_per_repo(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        demo = add_repo(conn, "demo", "DEMO")
        other = add_repo(conn, "other", "OTH")
        keys = [add_task(conn, demo.id).key for _ in range(3)]
        other_key = add_task(conn, other.id).key
        after = queries.get_repo(conn, "demo")
    assert keys == ["DEMO-1", "DEMO-2", "DEMO-3"]
    assert other_key == "OTH-1"
    assert after is not None
    assert after.next_task_number == 4


def test_rolled_back_task_gives_its_number_back(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
    with engine.connect() as conn:
        assert add_task(conn, repo.id).key == "DEMO-1"
        conn.rollback()
    with engine.begin() as conn:
        assert add_task(conn, repo.id).key == "DEMO-1"


def test_insert_task_records_create_transition(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
        task = add_task(conn, repo.id, now=200.0)
        history = queries.list_transitions(conn, task.id)
    assert task.number == 1
    assert task.state == "active"
    assert task.reasons == []
    assert (task.developer_retries, task.infra_retries) == (0, 0)
    assert len(history) == 1
    (created,) = history
    assert created.kind == "create"
    assert (created.from_stage, created.to_stage) == (None, "development")
    assert (created.from_state, created.to_state) == (None, "active")
    assert created.actor == "cli"
    assert created.at == 200.0
    assert created.reasons


def test_insert_task_unknown_repo(engine: sa.Engine) -> None:
    with pytest.raises(NotFoundError), engine.begin() as conn:
        add_task(conn, 999)


def test_task_state_is_checked(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.insert_task(
            conn, repo_id=repo.id, title="t", body="", stage="development", now=1.0, state="odd"
        )


def test_get_list_update_tasks(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        demo = add_repo(conn, "demo", "DEMO")
        other = add_repo(conn, "other", "OTH")
        t1 = add_task(conn, demo.id)
        t2 = add_task(conn, demo.id)
        t3 = add_task(conn, other.id)
        updated = queries.update_task(
            conn,
            t2.id,
            now=300.0,
            stage="testing",
            state="blocked",
            reasons=("suite red", "budget spent"),
            developer_retries=3,
        )
    assert updated.reasons == ["suite red", "budget spent"]
    assert (updated.stage, updated.state, updated.developer_retries) == ("testing", "blocked", 3)
    assert (updated.created_at, updated.updated_at) == (200.0, 300.0)
    with engine.connect() as conn:
        assert queries.get_task(conn, "DEMO-2") == updated
        assert queries.get_task_by_id(conn, t2.id) == updated
        assert queries.get_task(conn, "DEMO-99") is None
        assert [t.key for t in queries.list_tasks(conn)] == [t1.key, t2.key, t3.key]
        assert [t.key for t in queries.list_tasks(conn, repo_id=demo.id)] == ["DEMO-1", "DEMO-2"]
        assert [t.key for t in queries.list_tasks(conn, state="blocked")] == ["DEMO-2"]
        assert [t.key for t in queries.list_tasks(conn, stage="development")] == [
            "DEMO-1",
            "OTH-1",
        ]
        assert [t.key for t in queries.list_tasks(conn, limit=2)] == ["DEMO-1", "DEMO-2"]
        assert queries.count_tasks_by(conn) == {
            ("development", "active"): 2,
            ("testing", "blocked"): 1,
        }


def test_update_task_refuses_bad_fields(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        with pytest.raises(ValueError, match="unknown tasks column"):
            queries.update_task(conn, task.id, now=1.0, colour="red")
        with pytest.raises(ValueError, match="not updatable: key"):
            queries.update_task(conn, task.id, now=1.0, key="DEMO-9")
        with pytest.raises(NotFoundError):
            queries.update_task(conn, 999, now=1.0, state="done")


# ---- transitions -------------------------------------------------------------------------


def test_transitions_in_order(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        job = queries.insert_job(
            conn, task_id=task.id, stage="development", agent="patch", attempt=1, now=1.0
        )
        advance = queries.insert_transition(
            conn,
            task_id=task.id,
            job_id=job.id,
            kind="advance",
            from_stage="development",
            to_stage="testing",
            from_state="active",
            to_state="active",
            reasons=["branch has a diff"],
            actor="engine",
            now=400.0,
        )
        rollback = queries.insert_transition(
            conn,
            task_id=task.id,
            kind="rollback",
            from_stage="testing",
            to_stage="development",
            from_state="active",
            to_state="active",
            reasons=["2 tests failed"],
            actor="engine",
            now=401.0,
        )
        history = queries.list_transitions(conn, task.id)
    assert [t.kind for t in history] == ["create", "advance", "rollback"]
    assert history[1:] == [advance, rollback]
    assert advance.job_id == job.id
    assert rollback.job_id is None
    assert advance.reasons == ["branch has a diff"]


def test_transition_kind_is_checked(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.insert_transition(
            conn,
            task_id=task.id,
            kind="teleport",
            from_stage=None,
            to_stage=None,
            from_state=None,
            to_state=None,
            reasons=[],
            actor="engine",
            now=1.0,
        )


# ---- jobs --------------------------------------------------------------------------------


def test_a_queued_job_is_numbered_by_its_insert_alone(engine: sa.Engine) -> None:
    # The next attempt at a stage is the INSERT's own subquery: one statement per queued
    # job (a SELECT of the last attempt went first, a round trip on PostgreSQL).
    with engine.begin() as conn:
        repo = add_repo(conn)
        task = add_task(conn, repo.id)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        numbers = []
        for stage in (Stage.DEVELOPMENT, Stage.DEVELOPMENT, Stage.TESTING, Stage.DEVELOPMENT):
            with engine.begin() as conn:
                before = len(statements)
                job = queue_job(conn, repo, task, stage, now=300.0, notify=False)
                assert len(statements) - before == 1, statements[before:]
                numbers.append((job.stage, job.attempt))
                assert queries.next_attempt(conn, task.id, stage.value) == job.attempt + 1
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert numbers == [("development", 1), ("development", 2), ("testing", 1), ("development", 3)]


def test_job_round_trip(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        assert queries.next_attempt(conn, task.id, "development") == 1
        job = queries.insert_job(
            conn, task_id=task.id, stage="development", agent="patch", attempt=1, now=500.0
        )
        assert queries.next_attempt(conn, task.id, "development") == 2
        assert queries.next_attempt(conn, task.id, "testing") == 1
    assert job.state == "queued"
    assert job.not_before == 0.0
    assert job.cancel_requested is False
    assert job.reasons == []
    assert (job.outcome, job.verdict, job.started_at, job.serial_key) == (None, None, None, None)
    assert job.created_at == 500.0
    with engine.begin() as conn:
        running = queries.update_job(
            conn,
            job.id,
            state="running",
            pid=4242,
            pgid=4242,
            host="worker-1",
            lease_owner="worker-1:77",
            lease_expires_at=560.0,
            started_at=501.0,
            log_path="/tmp/runs/1-development-patch.log",
        )
        finished = queries.update_job(
            conn,
            job.id,
            state="finished",
            outcome="completed",
            verdict="PASS",
            reasons=["branch has a diff"],
            exit_code=0,
            finished_at=530.0,
            cost_usd=0.25,
            tokens_in=1200,
            tokens_out=300,
        )
        assert queries.update_job(conn, job.id) == finished
    assert running.pid == 4242
    assert finished.lease_owner == "worker-1:77"
    assert (finished.outcome, finished.verdict, finished.exit_code) == ("completed", "PASS", 0)
    assert finished.cost_usd == 0.25
    with engine.connect() as conn:
        assert queries.get_job(conn, job.id) == finished
        assert queries.get_job(conn, 999) is None


def test_list_jobs_filters(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
        t1, t2 = add_task(conn, repo.id), add_task(conn, repo.id)
        j1 = queries.insert_job(
            conn, task_id=t1.id, stage="development", agent="a", attempt=1, now=1
        )
        j2 = queries.insert_job(
            conn, task_id=t2.id, stage="development", agent="a", attempt=1, now=2, not_before=90.0
        )
        queries.update_job(conn, j1.id, state="running")
        assert [j.id for j in queries.list_jobs(conn)] == [j1.id, j2.id]
        assert [j.id for j in queries.list_jobs(conn, task_id=t2.id)] == [j2.id]
        assert [j.id for j in queries.list_jobs(conn, state="queued")] == [j2.id]
        assert [j.id for j in queries.list_jobs(conn, task_id=t1.id, state="queued")] == []
    assert j2.not_before == 90.0


def test_update_job_refuses_bad_fields(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        job = queries.insert_job(
            conn, task_id=task.id, stage="testing", agent="a", attempt=1, now=1
        )
        with pytest.raises(ValueError, match="unknown jobs column"):
            queries.update_job(conn, job.id, colour="red")
        with pytest.raises(ValueError, match="not updatable: attempt"):
            queries.update_job(conn, job.id, attempt=2)
        with pytest.raises(NotFoundError):
            queries.update_job(conn, 999, state="running")


def test_job_attempt_unique_per_task_and_stage(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        queries.insert_job(conn, task_id=task.id, stage="testing", agent="a", attempt=1, now=1)
        queries.insert_job(conn, task_id=task.id, stage="development", agent="a", attempt=1, now=1)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.insert_job(conn, task_id=task.id, stage="testing", agent="a", attempt=1, now=2)


def test_job_outcome_and_verdict_are_checked(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        task = add_task(conn, add_repo(conn).id)
        job = queries.insert_job(
            conn, task_id=task.id, stage="testing", agent="a", attempt=1, now=1
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.update_job(conn, job.id, outcome="exploded")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.update_job(conn, job.id, verdict="MAYBE")


def test_job_needs_existing_task(engine: sa.Engine) -> None:
    # On SQLite this holds only because make_engine turns PRAGMA foreign_keys on.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.insert_job(conn, task_id=999, stage="testing", agent="a", attempt=1, now=1)


def test_serial_gate_allows_one_running_job_per_key(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
        t1, t2, t3 = (add_task(conn, repo.id) for _ in range(3))

        def queue(task_id: int, key: str | None) -> JobRow:
            return queries.insert_job(
                conn, task_id=task_id, stage="deploy-staging", agent="a", attempt=1, now=1,
                serial_key=key,
            )  # fmt: skip

        first, second, other = queue(t1.id, "demo"), queue(t2.id, "demo"), queue(t3.id, "x")
        # Queued jobs may share a key; one of them may run; other keys and no key are free.
        queries.update_job(conn, first.id, state="running")
        queries.update_job(conn, other.id, state="running")
        for task in (t1, t2, t3):
            free = queries.insert_job(
                conn, task_id=task.id, stage="testing", agent="a", attempt=1, now=1
            )
            queries.update_job(conn, free.id, state="running")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        queries.update_job(conn, second.id, state="running")
    with engine.begin() as conn:
        # Once the holder finishes, the next one may run.
        queries.update_job(conn, first.id, state="finished")
        assert queries.update_job(conn, second.id, state="running").state == "running"


def test_claims_look_past_jobs_the_serial_gate_holds_back(engine: sa.Engine) -> None:
    # Found by bench/transitions.py with four workers: forty tasks queued to merge (their
    # deploy-staging jobs oldest) behind a task that holds the gate at deploy. Candidates
    # were read oldest first, a window of room x 4; all blocked, so the holder's own
    # deploy job, and the other repo's work, were never claimed, and nothing moved again.
    from orchestrator.store import jobs as jobq

    with engine.begin() as conn:
        repo = add_repo(conn)
        other = add_repo(conn, "other", "OTHER")
        waiting = [add_task(conn, repo.id) for _ in range(40)]
        for t in waiting:
            queries.update_task(conn, t.id, now=300.0, stage="deploy-staging")
            queries.insert_job(
                conn, task_id=t.id, stage="deploy-staging", agent="a", attempt=1, now=300.0,
                not_before=300.0, serial_key="demo",
            )  # fmt: skip
        holder = add_task(conn, repo.id)
        queries.update_task(conn, holder.id, now=400.0, stage="deploy")
        deploy = queries.insert_job(
            conn, task_id=holder.id, stage="deploy", agent="a", attempt=1, now=400.0,
            not_before=400.0, serial_key="demo",
        )  # fmt: skip
        elsewhere = add_task(conn, other.id)
        free = queries.insert_job(
            conn, task_id=elsewhere.id, stage="testing", agent="a", attempt=1, now=500.0,
            not_before=500.0,
        )  # fmt: skip
        claimed = jobq.claim_jobs(
            conn,
            owner="w:1:1",
            host="w",
            now=1000.0,
            lease_s=30,
            limits=jobq.ClaimLimits(2, 2),
            hold_stages=("deploy", "post-deploy-monitor"),
        )
    assert sorted(j.id for j in claimed) == sorted([deploy.id, free.id])


# ---- alerts ------------------------------------------------------------------------------


def test_alerts_newest_first_and_updates(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
        task = add_task(conn, repo.id)
        old = alert_rows.insert_alert(
            conn, kind="task-blocked", severity="warning", message="DEMO-1 is blocked",
            reasons=["developer budget spent"], now=10.0, task_id=task.id, repo_id=repo.id,
        )  # fmt: skip
        new = alert_rows.insert_alert(
            conn, kind="deploy-unhealthy", severity="critical", message="health check failed",
            reasons=["HTTP 503"], now=20.0, repo_id=repo.id,
        )  # fmt: skip
        general = alert_rows.insert_alert(
            conn, kind="note", severity="info", message="hello", reasons=[], now=15.0
        )
        assert [a.id for a in alert_rows.list_alerts(conn)] == [new.id, general.id, old.id]
        assert [a.id for a in alert_rows.list_alerts(conn, limit=1)] == [new.id]
        delivered = alert_rows.update_alert(
            conn, new.id, delivered_at=21.0, delivery_attempts=1, acknowledged_at=30.0
        )
        assert [a.id for a in alert_rows.list_alerts(conn, undelivered=True)] == [
            general.id,
            old.id,
        ]
        with pytest.raises(ValueError, match="not updatable: created_at"):
            alert_rows.update_alert(conn, new.id, created_at=1.0)
        with pytest.raises(NotFoundError):
            alert_rows.update_alert(conn, 999, delivered_at=1.0)
    assert old.reasons == ["developer budget spent"]
    assert (old.task_id, old.repo_id) == (task.id, repo.id)
    assert (general.task_id, general.repo_id) == (None, None)
    assert old.delivered_at is None
    assert old.delivery_attempts == 0
    assert (delivered.delivered_at, delivered.delivery_attempts) == (21.0, 1)
    assert delivered.acknowledged_at == 30.0


def test_alert_severity_is_checked(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        alert_rows.insert_alert(conn, kind="x", severity="meh", message="m", reasons=[], now=1.0)


# ---- the schema's vocabularies follow the domain -----------------------------------------


def test_checked_vocabularies_match_the_domain() -> None:
    assert set(s.TASK_STATES) == {v.value for v in State}
    assert set(s.JOB_OUTCOMES) == {v.value for v in OutcomeKind}
    assert set(s.VERDICTS) == {v.value for v in VerdictStatus}
    assert {v.value for v in TransitionKind} <= set(s.TRANSITION_KINDS)


# ---- engine and dialect quirks -----------------------------------------------------------


def test_sqlite_pragmas(engine: sa.Engine) -> None:
    sqlite_only(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_sqlite_transactions_begin_immediate(engine: sa.Engine, migrated_db_url: str) -> None:
    """A transaction holds the write lock from its start, before it writes anything."""
    sqlite_only(engine)
    impatient = make_engine(migrated_db_url, busy_timeout_ms=50)
    try:
        with engine.begin() as holder:
            holder.exec_driver_sql("SELECT 1")
            # With pysqlite's own deferred BEGIN nothing would be locked yet.
            with pytest.raises(sa.exc.OperationalError, match="locked"), impatient.begin():
                pass
        with impatient.begin() as conn:  # and once released, the other side goes ahead
            add_repo(conn)
    finally:
        impatient.dispose()


def test_sqlite_reader_does_not_queue_behind_a_writer(
    engine: sa.Engine, migrated_db_url: str
) -> None:
    sqlite_only(engine)
    impatient = make_engine(migrated_db_url, busy_timeout_ms=50)
    try:
        with engine.begin() as writer:
            add_repo(writer)
            with reader(impatient).connect() as conn:
                # WAL: the reader sees the last commit, not the writer's open transaction.
                assert queries.list_repos(conn) == []
    finally:
        impatient.dispose()


def test_make_engine_creates_sqlite_parent_dir(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "orch.db"
    eng = make_engine(f"sqlite:///{target}")
    try:
        with eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        eng.dispose()
    assert target.exists()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    eng = make_engine("postgresql://u@127.0.0.1:1/db", pool=PoolSizes(3, 1, 2.5))
    try:
        assert eng.dialect.driver == "psycopg"
        assert eng.pool.size() == 3  # type: ignore[attr-defined]
        assert eng.pool._max_overflow == 1  # type: ignore[attr-defined]
        assert eng.pool.timeout() == 2.5  # type: ignore[attr-defined]
    finally:
        eng.dispose()


def test_pool_settings_reach_the_engine(tmp_path: Path, db_url: str) -> None:
    st = load_settings(
        home=tmp_path / "home",
        database_url=db_url,
        db_pool_size=2,
        db_max_overflow=3,
        db_pool_timeout_s=0.5,
        max_parallel_jobs=4,
    )
    eng = open_engine(st)
    try:
        assert eng.pool.size() == 2  # type: ignore[attr-defined]
        assert eng.pool.timeout() == 0.5  # type: ignore[attr-defined]
        # Past size + overflow, a checkout waits db_pool_timeout_s, then fails as a
        # transient error (the worker tries again), not a hang.
        held = [eng.connect() for _ in range(5)]
        try:
            with pytest.raises(sa.exc.TimeoutError) as caught:
                eng.connect()
            assert is_transient(caught.value)
        finally:
            for conn in held:
                conn.close()
    finally:
        eng.dispose()


def test_transient_errors_are_told_from_bugs() -> None:
    assert is_transient(sa.exc.OperationalError("SELECT 1", {}, Exception("gone")))
    assert is_transient(sa.exc.TimeoutError("pool"))
    assert not is_transient(sa.exc.IntegrityError("INSERT", {}, Exception("unique")))
    assert not is_transient(sa.exc.ProgrammingError("SELEC", {}, Exception("syntax")))
    dropped = sa.exc.DBAPIError("SELECT 1", {}, Exception("eof"), connection_invalidated=True)
    assert is_transient(dropped)


def test_make_engine_rejects_other_backends() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://u@h/db")


# ---- migrations --------------------------------------------------------------------------


def test_upgrade_is_idempotent_and_current(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        assert current_revision(eng) is None
        assert not is_current(eng)
        upgrade(eng)
        assert is_current(eng)
        assert current_revision(eng) == head_revision()
        with eng.begin() as conn:
            add_repo(conn)
        upgrade(eng)  # a second run changes nothing and keeps the data
        assert is_current(eng)
        with eng.connect() as conn:
            assert queries.get_repo(conn, "demo") is not None
    finally:
        eng.dispose()


def test_upgrade_accepts_a_url_and_downgrade_round_trips(db_url: str) -> None:
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        assert is_current(eng)
        downgrade(eng, "base")
        assert current_revision(eng) is None
        assert set(sa.inspect(eng).get_table_names()) <= {"alembic_version"}
        upgrade(eng)
        assert set(sa.inspect(eng).get_table_names()) >= set(s.metadata.tables)
    finally:
        eng.dispose()


def test_step_by_step_upgrade_keeps_data(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        upgrade(eng, "0001")
        assert current_revision(eng) == "0001"
        assert not is_current(eng)
        with eng.begin() as conn:
            # A row as revision 0001 knows it: today's queries name later columns.
            conn.execute(
                sa.text(
                    "INSERT INTO repos (name, path, main_branch, key_prefix, "
                    "next_task_number, stages, agents, agent_env, options, self_hosting, "
                    "created_at, updated_at) VALUES ('demo', '/srv/demo', 'main', 'DEMO', 1, "
                    "'[]', '{}', '[]', '{}', false, 100.0, 100.0)"
                )
            )
        upgrade(eng)
        assert "workers" in sa.inspect(eng).get_table_names()
        downgrade(eng, "0001")
        assert "workers" not in sa.inspect(eng).get_table_names()
        with eng.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM repos")).scalars().all()
        assert names == ["demo"]  # the row came through the whole way up and down
    finally:
        eng.dispose()


# ---- processes racing on one database ----------------------------------------------------

_UPGRADER = """
import pathlib, sys, time
from orchestrator.store import is_current, make_engine, upgrade

url, ready, go = sys.argv[1:]
engine = make_engine(url)
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
upgrade(engine)
assert is_current(engine)
engine.dispose()
"""


def _race(tmp_path: Path, code: str, *args: str, count: int = 2) -> list[str]:
    """Run ``count`` copies of ``code`` released at one start line; their stdouts."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, args[0], str(r), str(go), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("racing processes did not get ready")
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [out for out, _ in outputs]


def test_concurrent_upgrades_of_a_fresh_database(db_url: str, tmp_path: Path) -> None:
    _race(tmp_path, _UPGRADER, db_url, count=3)
    eng = make_engine(db_url)
    try:
        assert is_current(eng)
    finally:
        eng.dispose()


_ALLOCATOR = """
import pathlib, sys, time
from orchestrator.store import make_engine, queries

url, ready, go, repo_id, count = sys.argv[1:]
engine = make_engine(url)
with engine.connect() as conn:
    conn.exec_driver_sql("SELECT 1")
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
keys = []
for i in range(int(count)):
    with engine.begin() as conn:
        task = queries.insert_task(
            conn, repo_id=int(repo_id), title=f"t{i}", body="", stage="development", now=float(i)
        )
        keys.append(task.key)
engine.dispose()
print("\\n".join(keys))
"""


def test_concurrent_processes_get_distinct_keys(
    engine: sa.Engine, migrated_db_url: str, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        repo = add_repo(conn)
    outputs = _race(tmp_path, _ALLOCATOR, migrated_db_url, str(repo.id), "50")
    keys = [k for out in outputs for k in out.split()]
    assert len(keys) == 100
    assert set(keys) == {f"DEMO-{n}" for n in range(1, 101)}
    with engine.connect() as conn:
        final = queries.get_repo(conn, "demo")
        creates = conn.execute(
            sa.select(sa.func.count())
            .select_from(s.transitions)
            .where(s.transitions.c.kind == "create")
        ).scalar_one()
    assert final is not None
    assert final.next_task_number == 101
    assert creates == 100
