"""The API's read-only queries: status, queue, task listings and details, alerts.

Each function takes a connection (the caller opens it on ``store.reader(engine)``, so on
SQLite no read waits for the write lock) and returns the response models. Lists that can
grow with the history are bounded by a ``limit`` and come with their full ``count``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator import __version__, money, task_ops, taskdir
from orchestrator.api import models as M
from orchestrator.api.snapshot import Snapshot
from orchestrator.config import Settings
from orchestrator.engine.worker import SERIAL_HOLD_STAGES
from orchestrator.masking import masked_setting, masked_url
from orchestrator.runners.base import STAGING_RUNNER, TEST_RUNNER
from orchestrator.sandbox import sandbox_state
from orchestrator.store import (
    alert_rows,
    breakers,
    control,
    counters,
    dependencies,
    merges,
    queries,
    spend,
)
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import AlertRow, JobRow, TaskRow, TransitionRow
from orchestrator.store.schema import alerts, jobs, repos, tasks

LIVE_STATES = ("active", "deferred", "blocked")


# ---- small conversions -------------------------------------------------------------------


def task_out(t: TaskRow, repo_name: str) -> M.TaskOut:
    """A task as `orch task list --json` shows it."""
    return M.TaskOut(
        key=t.key,
        repo=repo_name,
        title=t.title,
        stage=t.stage,
        state=t.state,
        reasons=list(t.reasons or []),
        developer_retries=t.developer_retries,
        infra_retries=t.infra_retries,
        author=t.author,  # issue 13: shown wherever a task is
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def transition_out(h: TransitionRow) -> M.TransitionOut:
    """One history entry."""
    return M.TransitionOut(
        kind=h.kind,
        from_stage=h.from_stage,
        to_stage=h.to_stage,
        from_state=h.from_state,
        to_state=h.to_state,
        reasons=list(h.reasons or []),
        actor=h.actor,
        at=h.at,
    )


def job_out(j: JobRow) -> M.JobOut:
    """One job of a task."""
    return M.JobOut(
        id=j.id,
        stage=j.stage,
        agent=j.agent,
        attempt=j.attempt,
        state=j.state,
        outcome=j.outcome,
        verdict=j.verdict,
        exit_code=j.exit_code,
        reasons=list(j.reasons or []),
        log_path=j.log_path,
        started_at=j.started_at,
        finished_at=j.finished_at,
        cost_usd=j.cost_usd,
        tokens_in=j.tokens_in,
        tokens_out=j.tokens_out,
    )


def alert_out(a: AlertRow, task_key: str | None) -> M.AlertOut:
    """An alert as `orch alerts --json` shows it."""
    return M.AlertOut(
        id=a.id,
        kind=a.kind,
        severity=a.severity,
        message=a.message,
        reasons=list(a.reasons or []),
        task=task_key,
        created_at=a.created_at,
        delivered_at=a.delivered_at,
        delivery_attempts=a.delivery_attempts,
        occurrences=a.occurrences,
        resolved_at=a.resolved_at,
    )


def masked_settings(st: Settings) -> dict[str, M.SettingValue]:
    """Every setting, secrets masked by ``masking``'s rule (``***``, or empty when unset)."""
    out: dict[str, M.SettingValue] = {}
    for name in type(st).model_fields:
        value = masked_setting(name, getattr(st, name))
        out[name] = (
            value if isinstance(value, str | int | float | bool) or value is None else str(value)
        )
    out["effective_database_url"] = masked_url(st.effective_database_url)
    return out


# ---- status ------------------------------------------------------------------------------


def repo_names(conn: sa.Connection) -> dict[int, str]:
    """Repo id → name."""
    return {int(i): str(n) for i, n in conn.execute(sa.select(repos.c.id, repos.c.name))}


def task_keys(conn: sa.Connection, ids: Iterable[int]) -> dict[int, str]:
    """Task id → key, for the given ids only."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = sa.select(tasks.c.id, tasks.c.key).where(tasks.c.id.in_(wanted))
    return {int(i): str(k) for i, k in conn.execute(stmt)}


def serial_gate(conn: sa.Connection) -> dict[str, str | None]:
    """Every repo → the task holding its serial gate (as the claim sees it), or None."""
    holders = jobq.serial_gate_holders(conn, SERIAL_HOLD_STAGES)
    keys = task_keys(conn, holders.values())
    gate: dict[str, str | None] = dict.fromkeys(sorted(repo_names(conn).values()))
    for serial_key, task_id in holders.items():
        gate[serial_key] = keys.get(task_id)
    return gate


def kill_switches(conn: sa.Connection, st: Settings) -> M.KillSwitches:
    """The switches in force: the settings, and `orch pause` in the database."""
    in_db = control.is_paused(conn)
    return M.KillSwitches(
        paused=st.paused or in_db,
        paused_by_setting=st.paused,
        paused_in_db=in_db,
        test_runner_enabled=st.test_runner_enabled,
        staging_runner_enabled=st.staging_runner_enabled,
        subprocess_tree_kill_enabled=st.subprocess_tree_kill_enabled,
        merge_retest_skip_when_current_enabled=st.merge_retest_skip_when_current_enabled,
        **dict(zip(("sandbox", "sandbox_detail"), sandbox_state(st), strict=True)),
    )


def task_counts(conn: sa.Connection) -> M.TaskCounts:
    """Tasks by state and by (stage, state)."""
    counts = queries.count_tasks_by(conn)
    by_state: dict[str, int] = {}
    for (_stage, state), n in counts.items():
        by_state[state] = by_state.get(state, 0) + n
    return M.TaskCounts(
        total=sum(counts.values()),
        by_state=by_state,
        by_stage_state=[
            M.StageStateCount(stage=stage, state=state, count=n)
            for (stage, state), n in sorted(counts.items())
        ],
    )


def llm_spend(conn: sa.Connection, st: Settings, now: float) -> M.LlmSpend:
    """The sum of ``jobs.cost_usd`` and tokens, the last 24 hours' as the day budget counts
    it, the budgets, and the live tasks that spent most; no reported cost counts as 0."""
    total = spend.total_spend(conn)
    day = spend.day_spend(conn, since=now - spend.DAY_S)
    return M.LlmSpend(
        as_of=now,
        total_usd=total.cost_usd,
        last_24h_usd=day.cost_usd,
        last_24h_tokens_in=day.tokens_in,
        last_24h_tokens_out=day.tokens_out,
        day_budget_usd=money.budget_or_none(st.llm_budget_per_day_usd),
        task_budget_usd=money.budget_or_none(st.llm_budget_per_task_usd),
        tokens_in=total.tokens_in,
        tokens_out=total.tokens_out,
        jobs_with_cost=total.jobs_with_cost,
        top_tasks=[task_spend_out(t) for t in spend.top_live_task_spend(conn)],
    )


def task_spend_out(t: spend.TaskSpend) -> M.TaskSpendOut:
    """A task's spend as ``/status`` lists it."""
    return M.TaskSpendOut(
        key=t.key,
        state=t.state,
        cost_usd=t.spend.cost_usd,
        tokens_in=t.spend.tokens_in,
        tokens_out=t.spend.tokens_out,
    )


def workers(conn: sa.Connection, st: Settings, now: float) -> list[M.WorkerOut]:
    """Workers with a heartbeat row, newest heartbeat first."""
    return [
        M.WorkerOut(
            id=w.id,
            name=w.name,
            host=w.host,
            pid=w.pid,
            started_at=w.started_at,
            heartbeat_at=w.heartbeat_at,
            heartbeat_age_s=max(0.0, now - w.heartbeat_at),
            stale=now - w.heartbeat_at > st.job_lease_s,
        )
        for w in control.list_workers(conn)
    ]


def backends(conn: sa.Connection) -> list[M.BackendOut]:
    """The model backends' circuit breakers."""
    return [M.BackendOut(**b.view()) for b in breakers.list_backends(conn)]


@dataclass(frozen=True)
class Aggregates:
    """What adds up the whole history: served from a snapshot (see ``api.snapshot``)."""

    runners: dict[str, M.RunnerCounters]
    merge_gate: dict[str, int]
    spend: M.LlmSpend


def aggregates(conn: sa.Connection, st: Settings, now: float) -> Aggregates:
    """The runner and merge counters and the LLM spend, computed now."""
    return Aggregates(
        runner_counters(conn, st), merges.merge_counters(conn), llm_spend(conn, st, now)
    )


def status(
    conn: sa.Connection,
    st: Settings,
    *,
    started_at: float,
    scheduler: bool,
    now: float,
    totals: Aggregates,
) -> M.StatusOut:
    """Everything ``GET /status`` shows."""
    alert_count = conn.execute(
        sa.select(sa.func.count()).select_from(alerts).where(alerts.c.resolved_at.is_(None))
    ).scalar_one()
    return M.StatusOut(
        version=__version__,
        started_at=started_at,
        uptime_s=max(0.0, now - started_at),
        now=now,
        scheduler=scheduler,
        settings=masked_settings(st),
        kill_switches=kill_switches(conn, st),
        repos=sorted(repo_names(conn).values()),
        tasks=task_counts(conn),
        llm_spend=totals.spend,
        backends=backends(conn),
        workers=workers(conn, st, now),
        serial_gate=serial_gate(conn),
        alerts=int(alert_count),
    )


# ---- queue -------------------------------------------------------------------------------

_J = jobs.c
_T = tasks.c


def _job_task_repo() -> sa.Join:
    return jobs.join(tasks, _T.id == _J.task_id).join(repos, repos.c.id == _T.repo_id)


def queue_counts(conn: sa.Connection) -> dict[str, int]:
    """How many jobs are queued (of active tasks) and running, tasks deferred and blocked.

    One statement: the four counts are read in one round trip.
    """

    def count(table: sa.FromClause, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()

    row = conn.execute(
        sa.select(
            count(
                jobs.join(tasks, _T.id == _J.task_id), _J.state == "queued", _T.state == "active"
            ),
            count(jobs, _J.state == "running"),
            count(tasks, _T.state == "deferred"),
            count(tasks, _T.state == "blocked"),
        )
    ).one()
    return dict(zip(("queued", "running", "deferred", "blocked"), map(int, row), strict=True))


def queued_section(conn: sa.Connection, now: float, limit: int, count: int) -> M.QueuedSection:
    """Queued jobs of active tasks, in the order a worker claims them."""
    where = (_J.state == "queued", _T.state == "active")
    stmt = (
        sa.select(
            _J.id,
            _T.key,
            repos.c.name,
            _J.stage,
            _J.agent,
            _J.attempt,
            _J.not_before,
            _J.created_at,
        )
        .select_from(_job_task_repo())
        .where(*where)
        .order_by(_J.not_before, _J.id)
        .limit(limit)
    )
    items = [
        M.QueuedJobOut(
            job=r.id,
            task=r.key,
            repo=r.name,
            stage=r.stage,
            agent=r.agent,
            attempt=r.attempt,
            not_before=r.not_before,
            created_at=r.created_at,
            waiting_s=max(0.0, now - r.created_at),
        )
        for r in conn.execute(stmt)
    ]
    return M.QueuedSection(count=count, items=items)


def running_section(conn: sa.Connection, now: float, limit: int, count: int) -> M.RunningSection:
    """Running jobs, longest-running first, with their agent and elapsed time."""
    stmt = (
        sa.select(
            _J.id,
            _T.key,
            repos.c.name,
            _J.stage,
            _J.agent,
            _J.attempt,
            _J.started_at,
            _J.host,
            _J.lease_owner,
            _J.pid,
        )
        .select_from(_job_task_repo())
        .where(_J.state == "running")
        .order_by(_J.started_at, _J.id)
        .limit(limit)
    )
    items = [
        M.RunningJobOut(
            job=r.id,
            task=r.key,
            repo=r.name,
            stage=r.stage,
            agent=r.agent,
            attempt=r.attempt,
            started_at=r.started_at,
            elapsed_s=0.0 if r.started_at is None else max(0.0, now - r.started_at),
            host=r.host,
            worker=r.lease_owner,
            pid=r.pid,
        )
        for r in conn.execute(stmt)
    ]
    return M.RunningSection(count=count, items=items)


def deferred_section(conn: sa.Connection, limit: int, count: int) -> M.DeferredSection:
    """Deferred tasks, most recently deferred first, with their retry's ``not_before``.

    Tasks first (their state index), then only their own queued jobs (the task_id index):
    on 10,000 tasks and 100,000 jobs a few milliseconds, where ordering every deferred task
    by its jobs took seconds on SQLite (bench/api.py).
    """
    stmt = (
        sa.select(
            _T.id,
            _T.key,
            repos.c.name,
            _T.stage,
            _T.infra_retries,
            _T.reasons,
            _T.updated_at,
        )
        .select_from(tasks.join(repos, repos.c.id == _T.repo_id))
        .where(_T.state == "deferred")
        .order_by(_T.updated_at.desc(), _T.id.desc())
        .limit(limit)
    )
    rows = conn.execute(stmt).all()
    next_at: dict[int, float] = {}
    if rows:
        retries = (
            sa.select(_J.task_id, sa.func.min(_J.not_before))
            .where(_J.task_id.in_([r.id for r in rows]), _J.state == "queued")
            .group_by(_J.task_id)
        )
        next_at = {int(task_id): float(nb) for task_id, nb in conn.execute(retries)}
    items = [
        M.DeferredTaskOut(
            task=r.key,
            repo=r.name,
            stage=r.stage,
            not_before=next_at.get(r.id),
            infra_retries=r.infra_retries,
            reasons=list(r.reasons or []),
            updated_at=r.updated_at,
        )
        for r in rows
    ]
    return M.DeferredSection(count=count, items=items)


def blocked_section(conn: sa.Connection, limit: int, count: int) -> M.BlockedSection:
    """Blocked tasks, most recently blocked first, with the reasons."""
    stmt = (
        sa.select(
            _T.key,
            repos.c.name,
            _T.stage,
            _T.reasons,
            _T.developer_retries,
            _T.infra_retries,
            _T.updated_at,
        )
        .select_from(tasks.join(repos, repos.c.id == _T.repo_id))
        .where(_T.state == "blocked")
        .order_by(_T.updated_at.desc(), _T.id.desc())
        .limit(limit)
    )
    items = [
        M.BlockedTaskOut(
            task=r.key,
            repo=r.name,
            stage=r.stage,
            reasons=list(r.reasons or []),
            developer_retries=r.developer_retries,
            infra_retries=r.infra_retries,
            updated_at=r.updated_at,
        )
        for r in conn.execute(stmt)
    ]
    return M.BlockedSection(count=count, items=items)


def runner_counters(conn: sa.Connection, st: Settings) -> dict[str, M.RunnerCounters]:
    """The test-runner's and the staging-runner's jobs, each part counted as its own."""
    tallies = counters.runner_counters(conn, (TEST_RUNNER, STAGING_RUNNER))
    switches = {
        TEST_RUNNER: (st.test_runner_enabled, st.test_runner_repos),
        STAGING_RUNNER: (st.staging_runner_enabled, st.staging_runner_repos),
    }
    return {
        n: M.RunnerCounters(
            agent=n,
            enabled=switches[n][0],
            repos=switches[n][1],
            jobs=a.jobs,
            queued=a.queued,
            running=a.running,
            finished=a.finished,
            by_outcome=a.own.by_outcome,
            by_verdict=a.own.by_verdict,
            merge_gate_failed=a.merge_gate_failed,
            infra_retries=a.infra_retries,
            llm_fallback=M.FallbackCounters(
                finished=a.llm_fallback.finished,
                by_outcome=a.llm_fallback.by_outcome,
                by_verdict=a.llm_fallback.by_verdict,
            ),
        )
        for n, a in tallies.items()
    }


def queue(
    conn: sa.Connection, *, now: float, limit: int, totals: Snapshot[Aggregates]
) -> M.QueueOut:
    """Everything ``GET /queue`` shows: live lists, and the counters of ``totals``."""
    runners = totals.value.runners
    counts = queue_counts(conn)
    return M.QueueOut(
        now=now,
        limit=limit,
        counters_as_of=totals.as_of,
        queued=queued_section(conn, now, limit, counts["queued"]),
        running=running_section(conn, now, limit, counts["running"]),
        deferred=deferred_section(conn, limit, counts["deferred"]),
        blocked=blocked_section(conn, limit, counts["blocked"]),
        serial_gate=serial_gate(conn),
        test_runner=runners[TEST_RUNNER],
        staging_runner=runners[STAGING_RUNNER],
        merge_gate=totals.value.merge_gate,
    )


# ---- tasks and alerts --------------------------------------------------------------------


def list_tasks(
    conn: sa.Connection,
    *,
    repo_id: int | None,
    state: str | None,
    stage: str | None,
    limit: int,
    offset: int,
) -> list[M.TaskOut]:
    """Tasks matching every given filter, oldest first, one page."""
    stmt = sa.select(tasks).order_by(_T.id).limit(limit).offset(offset)
    if repo_id is not None:
        stmt = stmt.where(_T.repo_id == repo_id)
    if state is not None:
        stmt = stmt.where(_T.state == state)
    if stage is not None:
        stmt = stmt.where(_T.stage == stage)
    names = repo_names(conn)
    rows = [TaskRow(**r._mapping) for r in conn.execute(stmt)]
    return [task_out(t, names.get(t.repo_id, "?")) for t in rows]


def task_detail(conn: sa.Connection, st: Settings, task: TaskRow) -> M.TaskDetailOut:
    """A task as `orch task show --json` shows it."""
    repo = queries.get_repo_by_id(conn, task.repo_id)
    folder = taskdir.task_dir(st.tasks_dir, task.key)
    summary = task_out(task, repo.name if repo else "?")
    waiting = task_ops.task_waiting_on(conn, task)
    ours, foreign = taskdir.split_artifacts(folder, jobq.recorded_artifacts(conn, task.id))
    return M.TaskDetailOut(
        **summary.model_dump(),
        body=task.body,
        folder=str(folder),
        artifacts=ours,
        not_written_by_pipeline=foreign,
        history=[transition_out(h) for h in queries.list_transitions(conn, task.id)],
        jobs=[job_out(j) for j in queries.list_jobs(conn, task_id=task.id)],
        spend=task_spend_detail(conn, st, task.id),
        after=[
            M.DependencyOut(key=d.key, state=d.state) for d in dependencies.deps_of(conn, task.id)
        ],
        waiting_on=[M.DependencyOut(key=d.key, state=d.state) for d in waiting],
        waiting=task_ops.waiting_text(waiting),
    )


def task_spend_detail(conn: sa.Connection, st: Settings, task_id: int) -> M.SpendOut:
    """What the task's jobs cost so far, against the per-task budget."""
    got = spend.task_spend(conn, task_id)
    return M.SpendOut(
        cost_usd=got.cost_usd,
        tokens_in=got.tokens_in,
        tokens_out=got.tokens_out,
        jobs_with_cost=got.jobs_with_cost,
        budget_usd=money.budget_or_none(st.llm_budget_per_task_usd),
    )


def list_alerts(conn: sa.Connection, limit: int, *, resolved: bool = False) -> list[M.AlertOut]:
    """Open alerts, newest first; ``resolved`` lists the resolved ones too."""
    rows = alert_rows.list_alerts(conn, limit=limit, open_only=not resolved)
    keys = task_keys(conn, (a.task_id for a in rows if a.task_id is not None))
    return [alert_out(a, keys.get(a.task_id) if a.task_id else None) for a in rows]
