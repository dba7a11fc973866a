"""The API's read-only queries: the queue's sections, pages of tasks, alerts with their task.

The rows carry the names the API shows (``job``, ``task``, ``repo``, ``worker``...), so the
API builds its answers from them with pydantic's ``from_attributes`` and no field is
copied by hand. Lists that can grow with the history are bounded by a ``limit``; their
full counts come from ``queue_counts`` (one round trip).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa

from orchestrator.store import control
from orchestrator.store.rows import TaskRow
from orchestrator.store.schema import (
    alerts,
    jobs,
    merge_results,
    repos,
    tasks,
    transitions,
    workers,
)

_J = jobs.c
_T = tasks.c
_A = alerts.c
# A repo that is gone (never, with the foreign key; said as the API always said it).
UNKNOWN_REPO = "?"

Rows = Sequence[sa.Row[Any]]

# Ids bound in one statement at most: a driver refuses more than its limit of bound values
# (999 on SQLite before 3.32, 32,766 since, 65,535 for psycopg), and a list of ids (a
# backlog of queued jobs, a long history of tasks) can be longer.
IDS_PER_STATEMENT = 500


def id_batches(ids: Iterable[int]) -> list[list[int]]:
    """``ids``, each once and sorted, in lists of at most ``IDS_PER_STATEMENT``."""
    wanted = sorted(set(ids))
    n = IDS_PER_STATEMENT
    return [wanted[i : i + n] for i in range(0, len(wanted), n)]


# The statements the status pages run on every request are built once below: SQLAlchemy
# builds and keys a statement anew on every call unless it is a constant (the compiled
# form is cached by that key), which cost more than the reads themselves.
_LIMIT = sa.bindparam("limit", type_=sa.Integer)


@dataclass(frozen=True)
class TaskWithRepo(TaskRow):
    """A task and its repo's name: how every listing shows a task."""

    repo: str = field(kw_only=True)

    @classmethod
    def of(cls, task: TaskRow, repo: str) -> TaskWithRepo:
        """``task`` with the name of its repo."""
        return cls(**{f.name: getattr(task, f.name) for f in fields(TaskRow)}, repo=repo)


@dataclass(frozen=True)
class DeferredTask:
    """A deferred task, and when its retry may start (None: no job queued)."""

    task: str
    repo: str
    stage: str
    not_before: float | None
    infra_retries: int
    reasons: list[str]
    updated_at: float


_REPO_NAMES = sa.select(repos.c.id, repos.c.name)
_TASK_KEYS = sa.select(_T.id, _T.key).where(_T.id.in_(sa.bindparam("ids", expanding=True)))


def repo_names(conn: sa.Connection) -> dict[int, str]:
    """Repo id → name."""
    return {int(i): str(n) for i, n in conn.execute(_REPO_NAMES)}


def task_keys(conn: sa.Connection, ids: Iterable[int]) -> dict[int, str]:
    """Task id → key, for the given ids only."""
    return {
        int(i): str(k)
        for batch in id_batches(ids)
        for i, k in conn.execute(_TASK_KEYS, {"ids": batch})
    }


def is_open_alert() -> sa.ColumnElement[bool]:
    """SQL: the alert is open (raised and not resolved yet). The one definition every count
    and list of open alerts uses: the dashboard's, ``GET /status``'s, ``orch status``'s."""
    return _A.resolved_at.is_(None)


_OPEN_ALERTS = sa.select(sa.func.count()).select_from(alerts).where(is_open_alert())


def open_alert_count(conn: sa.Connection) -> int:
    """Alerts raised and not resolved yet."""
    return int(conn.execute(_OPEN_ALERTS).scalar_one())


# ---- the scheduler -----------------------------------------------------------------------

# What pauses claiming, as ``paused_by`` names it.
PAUSED_BY_SETTING = "ORCH_PAUSED"
PAUSED_BY_SWITCH = "orch pause"


@dataclass(frozen=True)
class SchedulerState:
    """Whether jobs are being run, and why not.

    ``state``: ``paused`` (by ``paused_by``: the setting, the database's switch, or both),
    else ``running`` or ``not-running``. ``in_this_process``: a scheduler runs in the
    process that asks (True), the process serves without one (False, ``orch serve
    --no-scheduler``), or the asker is no server (None: the CLI, which reads the workers'
    heartbeats instead). ``workers``: workers with a heartbeat within a job lease.
    """

    state: str
    paused_by: list[str]
    in_this_process: bool | None
    workers: int

    @property
    def text(self) -> str:
        """One line a person reads: ``running in this process``, ``PAUSED by ...``."""
        n = f"{self.workers} worker{'' if self.workers == 1 else 's'} with a heartbeat"
        if self.in_this_process is True:
            here = "running in this process"
        elif self.in_this_process is False:
            here = "not running in this process (orch serve --no-scheduler)"
            here += f"; {n} elsewhere" if self.workers else ""
        else:
            here = f"running ({n})" if self.workers else "not running (no worker heartbeat)"
        if self.state != "paused":
            return here
        by = " and ".join(f"`{p}`" if p == PAUSED_BY_SWITCH else p for p in self.paused_by)
        return f"PAUSED by {by}: no new jobs are claimed; scheduler {here}"


_LIVE_WORKERS = (
    sa.select(sa.func.count())
    .select_from(workers)
    .where(workers.c.heartbeat_at >= sa.bindparam("since"))
)


def scheduler_state(
    conn: sa.Connection,
    *,
    paused_by_setting: bool,
    in_this_process: bool | None,
    since: float,
    paused_in_db: bool | None = None,
) -> SchedulerState:
    """The scheduler as the dashboard, ``GET /status`` and ``orch status`` tell it;
    ``since``: a heartbeat at or after it is a live worker's (now minus a job lease);
    ``paused_in_db``: `orch pause`'s switch as the caller read it in this connection
    (None: read it here)."""
    paused_by = [PAUSED_BY_SETTING] if paused_by_setting else []
    if control.is_paused(conn) if paused_in_db is None else paused_in_db:
        paused_by.append(PAUSED_BY_SWITCH)
    n = int(conn.execute(_LIVE_WORKERS, {"since": since}).scalar_one())
    runs = in_this_process if in_this_process is not None else n > 0
    state = "paused" if paused_by else "running" if runs else "not-running"
    return SchedulerState(state, paused_by, in_this_process, n)


# ---- tasks and alerts --------------------------------------------------------------------


def _repo_name() -> sa.ColumnElement[str]:
    return sa.func.coalesce(repos.c.name, UNKNOWN_REPO).label("repo")


def _task_filter(
    repo_id: int | None, state: str | None, stage: str | None
) -> list[sa.ColumnElement[bool]]:
    where = []
    if repo_id is not None:
        where.append(_T.repo_id == repo_id)
    if state is not None:
        where.append(_T.state == state)
    if stage is not None:
        where.append(_T.stage == stage)
    return where


def task_page(
    conn: sa.Connection,
    *,
    repo_id: int | None,
    state: str | None,
    stage: str | None,
    limit: int,
    offset: int,
) -> list[TaskWithRepo]:
    """Tasks matching every given filter, oldest first, one page."""
    stmt = (
        sa.select(tasks, _repo_name())
        .select_from(tasks.outerjoin(repos, repos.c.id == _T.repo_id))
        .where(*_task_filter(repo_id, state, stage))
        .order_by(_T.id)
        .limit(limit)
        .offset(offset)
    )
    return [TaskWithRepo(**r._mapping) for r in conn.execute(stmt)]


def task_count(
    conn: sa.Connection, *, repo_id: int | None, state: str | None, stage: str | None
) -> int:
    """How many tasks match every given filter (``task_page``'s total)."""
    stmt = sa.select(sa.func.count()).select_from(tasks).where(*_task_filter(repo_id, state, stage))
    return int(conn.execute(stmt).scalar_one())


_ALERTS_WITH_TASK = (
    sa.select(
        _A.id,
        _A.kind,
        _A.severity,
        _A.message,
        _A.reasons,
        _T.key.label("task"),
        _A.created_at,
        _A.delivered_at,
        _A.delivery_attempts,
        _A.occurrences,
        _A.resolved_at,
    )
    .select_from(alerts.outerjoin(tasks, _T.id == _A.task_id))
    .order_by(_A.created_at.desc(), _A.id.desc())
    .limit(_LIMIT)
)
_OPEN_ALERTS_WITH_TASK = _ALERTS_WITH_TASK.where(is_open_alert())


def alerts_with_task(conn: sa.Connection, limit: int, *, open_only: bool) -> Rows:
    """Alerts, newest first, each with its task's key as ``task`` (None: no task);
    ``open_only`` keeps those not resolved."""
    stmt = _OPEN_ALERTS_WITH_TASK if open_only else _ALERTS_WITH_TASK
    return conn.execute(stmt, {"limit": limit}).all()


# ---- the queue ---------------------------------------------------------------------------


_JOB_TASK_REPO = jobs.join(tasks, _T.id == _J.task_id).join(repos, repos.c.id == _T.repo_id)


def _count(table: sa.FromClause, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
    return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()


_QUEUE_COUNTS = sa.select(
    _count(jobs.join(tasks, _T.id == _J.task_id), _J.state == "queued", _T.state == "active"),
    _count(jobs, _J.state == "running"),
    _count(tasks, _T.state == "deferred"),
    _count(tasks, _T.state == "blocked"),
)


def queue_counts(conn: sa.Connection) -> dict[str, int]:
    """How many jobs are queued (of active tasks) and running, tasks deferred and blocked.

    One statement: the four counts are read in one round trip.
    """
    row = conn.execute(_QUEUE_COUNTS).one()
    return dict(zip(("queued", "running", "deferred", "blocked"), map(int, row), strict=True))


_QUEUED_JOBS = (
    sa.select(
        _J.id.label("job"),
        _T.key.label("task"),
        repos.c.name.label("repo"),
        _J.stage,
        _J.agent,
        _J.attempt,
        _J.not_before,
        _J.created_at,
    )
    .select_from(_JOB_TASK_REPO)
    .where(_J.state == "queued", _T.state == "active")
    .order_by(_J.not_before, _J.id)
    .limit(_LIMIT)
)


def queued_jobs(conn: sa.Connection, limit: int) -> Rows:
    """Queued jobs of active tasks, in the order a worker claims them."""
    return conn.execute(_QUEUED_JOBS, {"limit": limit}).all()


_RUNNING_JOBS = (
    sa.select(
        _J.id.label("job"),
        _T.key.label("task"),
        repos.c.name.label("repo"),
        _J.stage,
        _J.agent,
        _J.attempt,
        _J.started_at,
        _J.host,
        _J.lease_owner.label("worker"),
        _J.pid,
    )
    .select_from(_JOB_TASK_REPO)
    .where(_J.state == "running")
    .order_by(_J.started_at, _J.id)
    .limit(_LIMIT)
)


def running_jobs(conn: sa.Connection, limit: int) -> Rows:
    """Running jobs, longest-running first, with their host, worker and pid."""
    return conn.execute(_RUNNING_JOBS, {"limit": limit}).all()


_DEFERRED_TASKS = (
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
    .limit(_LIMIT)
)
_NEXT_RETRIES = (
    sa.select(_J.task_id, sa.func.min(_J.not_before))
    .where(_J.task_id.in_(sa.bindparam("task_ids", expanding=True)), _J.state == "queued")
    .group_by(_J.task_id)
)


def deferred_tasks(conn: sa.Connection, limit: int) -> list[DeferredTask]:
    """Deferred tasks, most recently deferred first, with their retry's ``not_before``.

    Tasks first (their state index), then only their own queued jobs (the task_id index):
    on 10,000 tasks and 100,000 jobs a few milliseconds, where ordering every deferred task
    by its jobs took seconds on SQLite (bench/api.py).
    """
    rows = conn.execute(_DEFERRED_TASKS, {"limit": limit}).all()
    next_at: dict[int, float] = {}
    if rows:
        retries = conn.execute(_NEXT_RETRIES, {"task_ids": [r.id for r in rows]})
        next_at = {int(task_id): float(nb) for task_id, nb in retries}
    return [
        DeferredTask(
            task=r.key,
            repo=r.name,
            stage=r.stage,
            not_before=next_at.get(r.id),
            infra_retries=r.infra_retries,
            reasons=r.reasons,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


_BLOCKED_TASKS = (
    sa.select(
        _T.key.label("task"),
        repos.c.name.label("repo"),
        _T.stage,
        _T.reasons,
        _T.developer_retries,
        _T.infra_retries,
        _T.updated_at,
    )
    .select_from(tasks.join(repos, repos.c.id == _T.repo_id))
    .where(_T.state == "blocked")
    .order_by(_T.updated_at.desc(), _T.id.desc())
    .limit(_LIMIT)
)


def blocked_tasks(conn: sa.Connection, limit: int) -> Rows:
    """Blocked tasks, most recently blocked first, with the reasons."""
    return conn.execute(_BLOCKED_TASKS, {"limit": limit}).all()


# ---- what the API's running totals read (api/totals.py) ----------------------------------

# Job states whose rows still change; a finished job's counted columns never do.
UNFINISHED_JOB_STATES = ("queued", "running")


def job_marks(conn: sa.Connection, after_id: int) -> Rows:
    """``(id, created_at, state, agent)`` of the jobs with an id above ``after_id``, by id."""
    stmt = (
        sa.select(_J.id, _J.created_at, _J.state, _J.agent).where(_J.id > after_id).order_by(_J.id)
    )
    return conn.execute(stmt).all()


_UNFINISHED_IDS = sa.select(_J.id).where(_J.state.in_(UNFINISHED_JOB_STATES))
_UNFINISHED_IDS_UPTO = _UNFINISHED_IDS.where(_J.id <= sa.bindparam("upto_id"))


def unfinished_job_ids(conn: sa.Connection, upto_id: int | None = None) -> set[int]:
    """The ids of the jobs queued or running (up to ``upto_id``): read from the state
    index alone."""
    if upto_id is None:
        return set(conn.execute(_UNFINISHED_IDS).scalars().all())
    return set(conn.execute(_UNFINISHED_IDS_UPTO, {"upto_id": upto_id}).scalars().all())


@dataclass(frozen=True)
class Marks:
    """Where the growing tables end now, and how many jobs up to an id are unfinished."""

    jobs: int
    merge_results: int
    transitions: int
    unfinished: int


def _newest(table: sa.Table) -> sa.ScalarSelect[Any]:
    return sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0)).scalar_subquery()


_MARKS = sa.select(
    _newest(jobs),
    _newest(merge_results),
    _newest(transitions),
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(_J.state.in_(UNFINISHED_JOB_STATES), _J.id <= sa.bindparam("upto_id"))
    .scalar_subquery(),
)


def marks(conn: sa.Connection, upto_id: int) -> Marks:
    """The newest id of jobs, merge results and transitions (0: none), and how many jobs
    up to ``upto_id`` are queued or running: one statement, each part read by an index."""
    row = conn.execute(_MARKS, {"upto_id": upto_id}).one()
    return Marks(*(int(v) for v in row))


def unfinished_job_count(conn: sa.Connection, upto_id: int) -> int:
    """How many jobs are queued or running up to ``upto_id`` (the state index alone)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(jobs)
        .where(_J.state.in_(UNFINISHED_JOB_STATES), _J.id <= upto_id)
    )
    return int(conn.execute(stmt).scalar_one())


_RUNNING_IDS = sa.select(_J.id).where(_J.state == "running", _J.id <= sa.bindparam("upto_id"))


def running_job_ids(conn: sa.Connection, upto_id: int) -> set[int]:
    """The ids of the jobs running, up to ``upto_id`` (the state index alone)."""
    return set(conn.execute(_RUNNING_IDS, {"upto_id": upto_id}).scalars().all())


def row_marks(conn: sa.Connection, table: sa.Table, after_id: int) -> Rows:
    """``(id, at)`` of a growing table's rows (transitions, merge results) past ``after_id``."""
    stmt = sa.select(table.c.id, table.c.at).where(table.c.id > after_id).order_by(table.c.id)
    return conn.execute(stmt).all()


def cost_rows(conn: sa.Connection, where: sa.ColumnElement[bool]) -> Rows:
    """``(task_id, finished_at, cost_usd, tokens_in, tokens_out)`` of the jobs matching
    ``where`` that reported a cost (what ``store.spend`` sums)."""
    stmt = sa.select(
        _J.task_id,
        _J.finished_at,
        _J.cost_usd,
        sa.func.coalesce(_J.tokens_in, 0),
        sa.func.coalesce(_J.tokens_out, 0),
    ).where(where, _J.cost_usd.is_not(None))
    return conn.execute(stmt).all()


_TASK_KEY_STATES = sa.select(_T.id, _T.key, _T.state).where(
    _T.id.in_(sa.bindparam("ids", expanding=True))
)


def task_key_states(conn: sa.Connection, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """Task id → (key, state), for the given ids only."""
    return {
        int(i): (str(k), str(s))
        for batch in id_batches(ids)
        for i, k, s in conn.execute(_TASK_KEY_STATES, {"ids": batch})
    }
