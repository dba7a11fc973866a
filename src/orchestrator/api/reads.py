"""What the API reads: status, queue, task listings and details, alerts, as response models.

Each function takes a connection (the caller opens it on ``store.reader(engine)``, so on
SQLite no read waits for the write lock) and returns the response models. The SQL is in
``store/`` (``store.reads`` for the listings); the models are built from its rows with
pydantic's ``from_attributes``. Lists that can grow with the history are bounded by a
``limit`` and come with their full ``count``.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import sqlalchemy as sa

from orchestrator import __version__, money, task_ops, taskdir
from orchestrator.api import models as M
from orchestrator.api import task_models as TM
from orchestrator.api.totals import Snapshot, Totals
from orchestrator.config import Settings
from orchestrator.domain.stages import SERIAL_HOLD_STAGES, STAGING_RUNNER, TEST_RUNNER
from orchestrator.masking import masked_setting, masked_url
from orchestrator.sandbox import sandbox_state
from orchestrator.store import (
    breakers,
    control,
    counters,
    dependencies,
    pulls,
    queries,
    spend,
)
from orchestrator.store import jobs as jobq
from orchestrator.store import reads as store_reads

# The dashboard reads these here.
from orchestrator.store.reads import open_alert_count as open_alert_count
from orchestrator.store.reads import repo_names as repo_names
from orchestrator.store.rows import TaskRow

# ---- small conversions -------------------------------------------------------------------


def task_out(t: TaskRow, repo_name: str) -> M.TaskOut:
    """A task as `orch task list --json` shows it."""
    return M.TaskOut.model_validate(store_reads.TaskWithRepo.of(t, repo_name))


def masked_settings(st: Settings) -> dict[str, M.SettingValue]:
    """Every setting, secrets masked by ``masking``'s rule (``***``, or empty when unset)."""
    out: dict[str, M.SettingValue] = {}
    for name in (f.name for f in fields(st)):
        value = masked_setting(name, getattr(st, name))
        out[name] = (
            value if isinstance(value, str | int | float | bool) or value is None else str(value)
        )
    out["effective_database_url"] = masked_url(st.effective_database_url)
    return out


# ---- status ------------------------------------------------------------------------------


def serial_gate(conn: sa.Connection) -> dict[str, str | None]:
    """Every repo → the task holding its serial gate (as the claim sees it), or None."""
    holders = jobq.serial_gate_holders(conn, SERIAL_HOLD_STAGES)
    keys = store_reads.task_keys(conn, holders.values())
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


def scheduler_state(
    conn: sa.Connection,
    st: Settings,
    *,
    scheduler: bool,
    now: float,
    switches: M.KillSwitches | None = None,
) -> M.SchedulerStateOut:
    """The scheduler as this server sees it: ``scheduler``, one runs in this process;
    ``switches``: the kill switches read already in this connection (None: read here)."""
    got = store_reads.scheduler_state(
        conn,
        paused_by_setting=st.paused,
        in_this_process=scheduler,
        since=now - st.job_lease_s,
        paused_in_db=None if switches is None else switches.paused_in_db,
    )
    return M.SchedulerStateOut(**asdict(got), text=got.text)


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


def llm_spend(conn: sa.Connection, st: Settings, now: float, totals: Snapshot) -> M.LlmSpend:
    """The sum of ``jobs.cost_usd`` and tokens, the last 24 hours' as the day budget counts
    it, the budgets, and the live tasks that spent most; no reported cost counts as 0."""
    total, day, top = totals.spend(conn)
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
        top_tasks=[task_spend_out(t) for t in top],
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
            **asdict(w),
            heartbeat_age_s=max(0.0, now - w.heartbeat_at),
            stale=now - w.heartbeat_at > st.job_lease_s,
        )
        for w in control.list_workers(conn)
    ]


def backends(conn: sa.Connection) -> list[M.BackendOut]:
    """The model backends' circuit breakers."""
    return [M.BackendOut(**b.view()) for b in breakers.list_backends(conn)]


def status(
    conn: sa.Connection,
    st: Settings,
    *,
    started_at: float,
    scheduler: bool,
    now: float,
    totals: Totals,
) -> M.StatusOut:
    """Everything ``GET /status`` shows."""
    switches = kill_switches(conn, st)
    return M.StatusOut(
        version=__version__,
        started_at=started_at,
        uptime_s=max(0.0, now - started_at),
        now=now,
        scheduler=scheduler,
        scheduler_state=scheduler_state(conn, st, scheduler=scheduler, now=now, switches=switches),
        settings=masked_settings(st),
        kill_switches=switches,
        repos=sorted(repo_names(conn).values()),
        tasks=task_counts(conn),
        llm_spend=llm_spend(conn, st, now, totals.snapshot(conn, now)),
        backends=backends(conn),
        workers=workers(conn, st, now),
        serial_gate=serial_gate(conn),
        alerts=store_reads.open_alert_count(conn),
    )


# ---- queue -------------------------------------------------------------------------------


def queued_section(conn: sa.Connection, now: float, limit: int, count: int) -> M.QueuedSection:
    """Queued jobs of active tasks, in the order a worker claims them."""
    items = [
        M.QueuedJobOut(**r._mapping, waiting_s=max(0.0, now - r.created_at))
        for r in store_reads.queued_jobs(conn, limit)
    ]
    return M.QueuedSection(count=count, items=items)


def running_section(conn: sa.Connection, now: float, limit: int, count: int) -> M.RunningSection:
    """Running jobs, longest-running first, with their agent and elapsed time."""
    items = [
        M.RunningJobOut(
            **r._mapping,
            elapsed_s=0.0 if r.started_at is None else max(0.0, now - r.started_at),
        )
        for r in store_reads.running_jobs(conn, limit)
    ]
    return M.RunningSection(count=count, items=items)


def deferred_section(conn: sa.Connection, limit: int, count: int) -> M.DeferredSection:
    """Deferred tasks, most recently deferred first, with their retry's ``not_before``."""
    items = [M.DeferredTaskOut.model_validate(d) for d in store_reads.deferred_tasks(conn, limit)]
    return M.DeferredSection(count=count, items=items)


def blocked_section(conn: sa.Connection, limit: int, count: int) -> M.BlockedSection:
    """Blocked tasks, most recently blocked first, with the reasons."""
    items = [M.BlockedTaskOut.model_validate(r) for r in store_reads.blocked_tasks(conn, limit)]
    return M.BlockedSection(count=count, items=items)


def runner_counters(
    st: Settings, tallies: dict[str, counters.RunnerTally]
) -> dict[str, M.RunnerCounters]:
    """The test-runner's and the staging-runner's jobs, each part counted as its own."""
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
            llm_fallback=M.FallbackCounters.model_validate(a.llm_fallback),
        )
        for n, a in tallies.items()
    }


def queue(
    conn: sa.Connection, st: Settings, *, now: float, limit: int, totals: Snapshot
) -> M.QueueOut:
    """Everything ``GET /queue`` shows: live lists, and the counters of ``totals``."""
    got = totals.counters(conn)
    runners = runner_counters(st, got.runners)
    counts = store_reads.queue_counts(conn)
    return M.QueueOut(
        now=now,
        limit=limit,
        counters_as_of=got.as_of,
        queued=queued_section(conn, now, limit, counts["queued"]),
        running=running_section(conn, now, limit, counts["running"]),
        deferred=deferred_section(conn, limit, counts["deferred"]),
        blocked=blocked_section(conn, limit, counts["blocked"]),
        serial_gate=serial_gate(conn),
        test_runner=runners[TEST_RUNNER],
        staging_runner=runners[STAGING_RUNNER],
        merge_gate=got.merge_gate,
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
) -> tuple[list[M.TaskOut], int]:
    """Tasks matching every given filter, oldest first, one page; and how many match."""
    page = store_reads.task_page(
        conn, repo_id=repo_id, state=state, stage=stage, limit=limit, offset=offset
    )
    total = store_reads.task_count(conn, repo_id=repo_id, state=state, stage=stage)
    return [M.TaskOut.model_validate(t) for t in page], total


def task_detail(conn: sa.Connection, st: Settings, task: TaskRow) -> TM.TaskDetailOut:
    """A task as `orch task show --json` shows it, its pull request too."""
    repo = queries.get_repo_by_id(conn, task.repo_id)
    folder = taskdir.task_dir(st.tasks_dir, task.key)
    summary = task_out(task, repo.name if repo else store_reads.UNKNOWN_REPO)
    waiting = task_ops.task_waiting_on(conn, task)
    ours, foreign = taskdir.split_artifacts(folder, jobq.recorded_artifacts(conn, task.id))
    pull = pulls.get_pull(conn, task.id)
    return TM.TaskDetailOut(
        **summary.model_dump(),
        body=task.body,
        folder=str(folder),
        artifacts=ours,
        not_written_by_pipeline=foreign,
        history=[
            TM.TransitionOut.model_validate(h) for h in queries.list_transitions(conn, task.id)
        ],
        jobs=[TM.JobOut.model_validate(j) for j in queries.list_jobs(conn, task_id=task.id)],
        spend=task_spend_detail(conn, st, task.id),
        after=[TM.DependencyOut.model_validate(d) for d in dependencies.deps_of(conn, task.id)],
        waiting_on=[TM.DependencyOut.model_validate(d) for d in waiting],
        waiting=task_ops.waiting_text(waiting),
        pull_request=None if pull is None else TM.PullRequestOut(**pull.view()),
    )


def task_spend_detail(conn: sa.Connection, st: Settings, task_id: int) -> TM.SpendOut:
    """What the task's jobs cost so far, against the per-task budget."""
    return TM.SpendOut(
        **asdict(spend.task_spend(conn, task_id)),
        budget_usd=money.budget_or_none(st.llm_budget_per_task_usd),
    )


def list_alerts(conn: sa.Connection, limit: int, *, resolved: bool = False) -> list[M.AlertOut]:
    """Open alerts, newest first; ``resolved`` lists the resolved ones too."""
    found = store_reads.alerts_with_task(conn, limit, open_only=not resolved)
    return [M.AlertOut.model_validate(a) for a in found]
