"""``api.totals``: the counters and spend kept current by folding agree with a full count.

Each step changes rows the way the engine does (jobs finish, new jobs, merge results,
defer transitions, tasks end) and compares what ``Totals`` serves, between folds and right
after one, with the store's own full queries. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator import repo_ops, task_ops
from orchestrator.api.totals import COMMIT_MARGIN_S, FOLD_EVERY_S, RUNNERS, Totals, safe_after
from orchestrator.config import load_settings
from orchestrator.domain.stages import TEST_RUNNER
from orchestrator.store import counters, make_engine, merges, queries, spend
from orchestrator.store import reads as store_reads
from orchestrator.store.spend import DAY_S, TOP_TASKS, Spend

STAGES = ["development", "testing", "deploy-staging"]


def _spend(s: Spend) -> tuple[float, int, int, int]:
    return (round(s.cost_usd, 9), s.tokens_in, s.tokens_out, s.jobs_with_cost)


def _full(conn: sa.Connection, now: float) -> tuple[Any, ...]:
    top = spend.top_live_task_spend(conn)
    return (
        counters.runner_counters(conn, RUNNERS),
        merges.merge_counters(conn),
        _spend(spend.total_spend(conn)),
        _spend(spend.day_spend(conn, since=now - DAY_S)),
        [(t.key, t.state, _spend(t.spend)) for t in top],
    )


def _served(totals: Totals, conn: sa.Connection, now: float) -> tuple[Any, ...]:
    got = totals.counters(conn, now)
    total, day, top = totals.spend(conn, now)
    return (
        got.runners,
        got.merge_gate,
        _spend(total),
        _spend(day),
        [(t.key, t.state, _spend(t.spend)) for t in top],
    )


class Rows:
    """Jobs, merge results and transitions written as the engine writes them."""

    def __init__(self, engine: sa.Engine, settings: Any) -> None:
        self.engine = engine
        self.settings = settings

    def task(self, title: str) -> int:
        return task_ops.add_task(self.engine, self.settings, "demo", title).task.id

    def job(
        self, task_id: int, agent: str, at: float, *, state: str = "finished", **end: Any
    ) -> int:
        with self.engine.begin() as conn:
            n = len(queries.list_jobs(conn, task_id=task_id)) + 1
            j = queries.insert_job(
                conn, task_id=task_id, stage="deploy-staging", agent=agent, attempt=n + 10, now=at
            )
            if state == "finished":
                end.setdefault("outcome", "completed")
                queries.update_job(conn, j.id, state="finished", finished_at=at + 1, **end)
            elif state == "running":
                queries.update_job(conn, j.id, state="running", started_at=at, **end)
        return j.id

    def finish(self, job_id: int, at: float, **end: Any) -> None:
        with self.engine.begin() as conn:
            queries.update_job(
                conn, job_id, state="finished", outcome="completed", finished_at=at, **end
            )

    def gate(self, task_id: int, job_id: int | None, status: str, at: float) -> None:
        with self.engine.begin() as conn:
            merges.insert_merge_result(
                conn, task_id=task_id, job_id=job_id, status=status, retest="ran",
                classification="timeout" if status == "INFRA" else None,
                rounds=1, reasons=["r"], now=at,
            )  # fmt: skip

    def defer(self, task_id: int, job_id: int, at: float) -> None:
        with self.engine.begin() as conn:
            queries.insert_transition(
                conn, task_id=task_id, job_id=job_id, kind="defer",
                from_stage="deploy-staging", to_stage="deploy-staging", from_state="active",
                to_state="deferred", reasons=["deploy-staging: tool error timeout"],
                actor="engine", now=at,
            )  # fmt: skip

    def end_task(self, task_id: int) -> None:
        with self.engine.begin() as conn:
            queries.update_task(conn, task_id, now=time.time(), state="done")


def test_folded_totals_agree_with_a_full_count(
    engine: sa.Engine, migrated_db_url: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES))
    rows = Rows(engine, settings)
    t0 = time.time()
    a, b, c = rows.task("a"), rows.task("b"), rows.task("c")
    rows.job(a, "claude", t0, cost_usd=0.1, tokens_in=10, tokens_out=5)
    staged = rows.job(a, "staging-runner", t0, verdict="FAIL", reasons=["x"])
    rows.gate(a, staged, "RED", t0)
    timed_out = rows.job(a, "staging-runner", t0, outcome="timeout")
    rows.defer(a, timed_out, t0)
    queued = rows.job(b, "test-runner", t0, state="queued")
    running = rows.job(b, "claude", t0, state="running")
    rows.job(c, "claude", t0 - 2 * DAY_S, cost_usd=0.3)
    rows.end_task(c)

    totals = Totals()
    now = t0 + COMMIT_MARGIN_S + 10  # every row so far may be folded
    steps = []

    def check(label: str) -> None:
        with engine.connect() as conn:
            served, full = _served(totals, conn, now), _full(conn, now)
        steps.append(label)
        assert served == full, (label, served, full)

    check("first request: the whole history folded")
    # Between folds: a pending job finishes, new jobs and rows arrive, one of them too
    # young to fold.
    rows.finish(queued, now, verdict="PASS")
    rows.finish(running, now, cost_usd=0.5, tokens_in=7, tokens_out=3)
    d = rows.task("d")
    young = rows.job(d, "test-runner", now - 1, state="queued")
    rows.job(d, "claude", t0, cost_usd=0.2)
    rows.gate(d, None, "MERGED", t0)
    again = rows.job(d, "staging-runner", t0, outcome="crashed")
    rows.defer(d, again, t0)
    now += 1
    check("between folds")
    now += FOLD_EVERY_S
    check("right after a fold")
    # The young job finishes; a task with spend ends (it leaves the live ranking).
    rows.finish(young, now, verdict="FAIL")
    rows.end_task(a)
    now += 1
    check("between folds, later")
    now += COMMIT_MARGIN_S + FOLD_EVERY_S
    check("after the young rows fold too")
    with engine.connect() as conn:
        folded = totals.folded(conn, now)
        # Only the jobs still queued (each task's first job) wait; the rest are folded.
        assert set(folded.pending) == store_reads.unfinished_job_ids(conn)
    assert young not in folded.pending
    assert folded.job_after >= young
    assert len(steps) == 5


def test_no_row_younger_than_the_commit_margin_is_folded() -> None:
    # PostgreSQL hands ids out before commit: a row with a smaller id than a young one may
    # still appear, so the fold stops before the first young row.
    now = 1_000_000.0
    old, young = now - COMMIT_MARGIN_S - 1, now - 1
    assert safe_after([(5, old), (6, old), (7, young)], 4, now - COMMIT_MARGIN_S) == 6
    assert safe_after([(5, young)], 4, now - COMMIT_MARGIN_S) == 4
    assert safe_after([], 4, now - COMMIT_MARGIN_S) == 4


def test_the_live_ranking_walks_past_many_finished_tasks(
    engine: sa.Engine, migrated_db_url: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    # The tasks that spent most are done: the ranking reads past them, batch after batch.
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES))
    rows = Rows(engine, settings)
    t0 = time.time()
    for i in range(45):  # 38 done ahead of the live ones: past the first batches
        task = rows.task(f"t{i}")
        rows.job(task, "claude", t0, cost_usd=1.0 + i, tokens_in=i, tokens_out=1)
        if i >= 7:
            rows.end_task(task)
    totals = Totals()
    now = t0 + COMMIT_MARGIN_S + 10
    with engine.connect() as conn:
        served, full = _served(totals, conn, now), _full(conn, now)
    assert served == full
    assert [key for key, _state, _spend in served[4]] == [f"DEMO-{n}" for n in (7, 6, 5)][
        :TOP_TASKS
    ]


def _engine_of_old_limit(url: str) -> sa.Engine:
    """An engine on ``url`` whose SQLite binds at most 999 values per statement, as builds
    before 3.32 do (32,766 after; psycopg 65,535, left as it is)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _old_limit(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    return engine


def test_a_backlog_longer_than_the_drivers_parameter_limit_is_counted(
    migrated_db_url: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    # The pending jobs are read by id. A backlog of queued jobs longer than a statement may
    # bind must be counted in statements that each stay under the limit.
    engine = _engine_of_old_limit(migrated_db_url)
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES))
    rows = Rows(engine, settings)
    t0 = time.time()
    task = rows.task("backlog")
    backlog = 1_200
    with engine.begin() as conn:
        ids = [
            queries.insert_job(
                conn, task_id=task, stage="testing", agent=TEST_RUNNER, attempt=n, now=t0
            ).id
            for n in range(1, backlog + 1)
        ]
    rows.job(task, "claude", t0, cost_usd=0.25)
    totals = Totals()
    now = t0 + COMMIT_MARGIN_S + 10

    def check() -> None:
        with engine.connect() as conn:
            assert _served(totals, conn, now) == _full(conn, now)

    check()  # the first fold: every queued job is pending
    with engine.begin() as conn:
        for job_id in ids:
            queries.update_job(
                conn, job_id, state="finished", outcome="completed", finished_at=now,
                cost_usd=0.001, tokens_in=1,
            )  # fmt: skip
    now += 1
    check()  # between folds: all of them finished since
    now += FOLD_EVERY_S
    check()  # folded
    with engine.connect() as conn:
        # Only the task's own first job is still queued.
        assert set(totals.folded(conn, now).pending) == store_reads.unfinished_job_ids(conn)
        assert not set(ids) & store_reads.unfinished_job_ids(conn)
        assert totals.counters(conn, now).runners[TEST_RUNNER].jobs == backlog
    engine.dispose()


def test_the_live_ranking_walks_a_history_longer_than_the_parameter_limit(
    migrated_db_url: str, make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    # The tasks that spent most are all done: the ranking looks them up in growing batches
    # (32, 128, 512, 2048 ...), and the fourth is past 999 ids. Each lookup stays under.
    engine = _engine_of_old_limit(migrated_db_url)
    settings = load_settings(home=tmp_path / "home", database_url=migrated_db_url)
    repo_id = repo_ops.add_repo(engine, "demo", make_repo(), repo_ops.RepoInput(stages=STAGES)).id
    t0 = time.time()
    with engine.begin() as conn:
        for n in range(1_800):
            task = queries.insert_task(
                conn, repo_id=repo_id, title=f"t{n}", body="", stage="development",
                now=t0, state="done",
            )  # fmt: skip
            job = queries.insert_job(
                conn, task_id=task.id, stage="development", agent="claude", attempt=1, now=t0
            )
            queries.update_job(
                conn, job.id, state="finished", outcome="completed", finished_at=t0,
                cost_usd=10.0 + n, tokens_in=1, tokens_out=1,
            )  # fmt: skip
    live = Rows(engine, settings)
    live.job(live.task("live"), "claude", t0, cost_usd=0.5)
    totals = Totals()
    now = t0 + COMMIT_MARGIN_S + 10
    with engine.connect() as conn:
        served, full = _served(totals, conn, now), _full(conn, now)
    assert served == full
    assert [key for key, _state, _spend in served[4]] == ["DEMO-1801"]
    engine.dispose()
