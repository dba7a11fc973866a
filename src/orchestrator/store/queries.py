"""Small reads and writes, each taking the caller's ``sa.Connection``.

Callers own transactions: the engine composes "finish job + record transition + queue next
job" from these functions inside one ``engine.begin()`` block, so no function here commits.
Every function returns frozen row dataclasses whose fields mirror the table's columns.
Times come from the caller's ``now`` (epoch seconds), never from the database clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import NotFoundError
from orchestrator.store import wake
from orchestrator.store.schema import alerts, jobs, repos, task_deps, tasks, transitions


@dataclass(frozen=True)
class RepoRow:
    """A managed repository."""

    id: int
    name: str
    path: str
    main_branch: str
    remote: str | None
    key_prefix: str
    next_task_number: int
    test_cmd: list[str] | None
    staging_cmd: list[str] | None
    deploy_cmd: list[str] | None
    health_url: str | None
    stages: list[str]
    agents: dict[str, str]
    agent_env: list[str]
    options: dict[str, Any]
    self_hosting: bool
    created_at: float
    updated_at: float
    main_seen: str | None = None


@dataclass(frozen=True)
class TaskRow:
    """A task (ticket) and where it stands."""

    id: int
    key: str
    repo_id: int
    number: int
    title: str
    body: str
    stage: str
    state: str
    reasons: list[str]
    developer_retries: int
    infra_retries: int
    created_at: float
    updated_at: float
    gate_retries: int = 0
    author: str | None = None


@dataclass(frozen=True)
class JobRow:
    """One run of one agent for one task at one stage."""

    id: int
    task_id: int
    stage: str
    agent: str
    attempt: int
    state: str
    outcome: str | None
    verdict: str | None
    reasons: list[str]
    exit_code: int | None
    pid: int | None
    pgid: int | None
    host: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    not_before: float
    cancel_requested: bool
    serial_key: str | None
    log_path: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None
    fresh_start: str | None = None
    artifacts: dict[str, str] | None = None
    reserved_usd: float | None = None


@dataclass(frozen=True)
class TransitionRow:
    """One entry of a task's append-only history."""

    id: int
    task_id: int
    job_id: int | None
    kind: str
    from_stage: str | None
    to_stage: str | None
    from_state: str | None
    to_state: str | None
    reasons: list[str]
    actor: str
    at: float


@dataclass(frozen=True)
class AlertRow:
    """Something a human must see."""

    id: int
    task_id: int | None
    repo_id: int | None
    kind: str
    severity: str
    message: str
    reasons: list[str]
    created_at: float
    delivered_at: float | None
    delivery_attempts: int
    acknowledged_at: float | None
    resolved_at: float | None = None
    occurrences: int = 1


# Columns that update_* refuse: identity, history, and the key allocator (only insert_task
# may move next_task_number, or two tasks could get one key).
_FIXED = {
    "repos": frozenset({"id", "next_task_number", "created_at", "updated_at"}),
    "tasks": frozenset({"id", "key", "repo_id", "number", "created_at", "updated_at"}),
    "jobs": frozenset({"id", "task_id", "stage", "attempt", "created_at"}),
    "alerts": frozenset({"id", "task_id", "repo_id", "created_at"}),
}


def _checked_fields(table: sa.Table, fields: Mapping[str, object]) -> dict[str, object]:
    fixed = _FIXED[table.name]
    unknown = sorted(set(fields) - set(table.c.keys()))
    if unknown:
        msg = f"unknown {table.name} column(s): {', '.join(unknown)}"
        raise ValueError(msg)
    refused = sorted(set(fields) & fixed)
    if refused:
        msg = f"{table.name} column(s) not updatable: {', '.join(refused)}"
        raise ValueError(msg)
    return {name: _jsonable(value) for name, value in fields.items()}


def _update(
    conn: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: Mapping[str, object],
    missing: str,
) -> sa.Row[Any]:
    """UPDATE one row and return it as it is now; NotFoundError(missing) when absent."""
    # An UPDATE needs a SET; "id = id" makes an empty update a plain existence check.
    to_set: Mapping[str, object] = values or {"id": table.c.id}
    stmt = sa.update(table).where(where).values(to_set).returning(*table.c)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFoundError(missing)
    return row


def _jsonable(value: object) -> object:
    # Tuples are the natural immutable argv; JSON columns store them as lists.
    return list(value) if isinstance(value, tuple) else value


def _list(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else list(values)


# ---- repos -------------------------------------------------------------------------------


def insert_repo(
    conn: sa.Connection,
    *,
    name: str,
    path: str,
    key_prefix: str,
    now: float,
    stages: Sequence[str],
    agents: Mapping[str, str],
    main_branch: str = "main",
    remote: str | None = None,
    test_cmd: Sequence[str] | None = None,
    staging_cmd: Sequence[str] | None = None,
    deploy_cmd: Sequence[str] | None = None,
    health_url: str | None = None,
    agent_env: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    self_hosting: bool = False,
    main_seen: str | None = None,
) -> RepoRow:
    """Add a repo; its first task will be ``<key_prefix>-1``."""
    stmt = (
        sa.insert(repos)
        .values(
            name=name,
            path=path,
            main_branch=main_branch,
            remote=remote,
            key_prefix=key_prefix,
            next_task_number=1,
            test_cmd=_list(test_cmd),
            staging_cmd=_list(staging_cmd),
            deploy_cmd=_list(deploy_cmd),
            health_url=health_url,
            stages=list(stages),
            agents=dict(agents),
            agent_env=list(agent_env),
            options=dict(options or {}),
            self_hosting=self_hosting,
            main_seen=main_seen,
            created_at=now,
            updated_at=now,
        )
        .returning(*repos.c)
    )
    return RepoRow(**conn.execute(stmt).one()._mapping)


def get_repo(conn: sa.Connection, name: str) -> RepoRow | None:
    """The repo called ``name``, or None."""
    row = conn.execute(sa.select(repos).where(repos.c.name == name)).one_or_none()
    return None if row is None else RepoRow(**row._mapping)


def get_repo_by_id(conn: sa.Connection, repo_id: int) -> RepoRow | None:
    """The repo with id ``repo_id``, or None."""
    row = conn.execute(sa.select(repos).where(repos.c.id == repo_id)).one_or_none()
    return None if row is None else RepoRow(**row._mapping)


def list_repos(conn: sa.Connection) -> list[RepoRow]:
    """All repos, by name."""
    rows = conn.execute(sa.select(repos).order_by(repos.c.name))
    return [RepoRow(**row._mapping) for row in rows]


def update_repo(conn: sa.Connection, name: str, *, now: float, **fields: object) -> RepoRow:
    """Set ``fields`` of repo ``name``; an unknown or fixed column is a ValueError."""
    values = {**_checked_fields(repos, fields), "updated_at": now}
    row = _update(conn, repos, repos.c.name == name, values, f"no repo named {name!r}")
    return RepoRow(**row._mapping)


# ---- tasks -------------------------------------------------------------------------------


def insert_task(
    conn: sa.Connection,
    *,
    repo_id: int,
    title: str,
    body: str,
    stage: str,
    now: float,
    state: str = "active",
    actor: str = "cli",
    author: str | None = None,
) -> TaskRow:
    """Add a task with the repo's next key, and its ``create`` transition."""
    # One UPDATE both reads and bumps the counter. On PostgreSQL the row lock makes a
    # concurrent allocator wait and then see our value; on SQLite the transaction's
    # BEGIN IMMEDIATE (store.db) already holds the write lock. Either way no two tasks
    # get one number, and a rolled-back insert gives its number back.
    bump = (
        sa.update(repos)
        .where(repos.c.id == repo_id)
        .values(next_task_number=repos.c.next_task_number + 1)
        .returning(repos.c.key_prefix, repos.c.next_task_number)
    )
    allocated = conn.execute(bump).one_or_none()
    if allocated is None:
        msg = f"no repo with id {repo_id}"
        raise NotFoundError(msg)
    number = int(allocated.next_task_number) - 1
    stmt = (
        sa.insert(tasks)
        .values(
            key=f"{allocated.key_prefix}-{number}",
            repo_id=repo_id,
            number=number,
            title=title,
            body=body,
            stage=stage,
            state=state,
            reasons=[],
            developer_retries=0,
            infra_retries=0,
            gate_retries=0,
            author=author,
            created_at=now,
            updated_at=now,
        )
        .returning(*tasks.c)
    )
    task = TaskRow(**conn.execute(stmt).one()._mapping)
    insert_transition(
        conn,
        task_id=task.id,
        kind="create",
        from_stage=None,
        to_stage=stage,
        from_state=None,
        to_state=state,
        reasons=[f"task created at stage {stage}"],
        actor=actor,
        now=now,
    )
    return task


def get_task(conn: sa.Connection, key: str) -> TaskRow | None:
    """The task with ``key`` (e.g. ``DEMO-7``), or None."""
    row = conn.execute(sa.select(tasks).where(tasks.c.key == key)).one_or_none()
    return None if row is None else TaskRow(**row._mapping)


def get_task_by_id(conn: sa.Connection, task_id: int) -> TaskRow | None:
    """The task with id ``task_id``, or None."""
    row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).one_or_none()
    return None if row is None else TaskRow(**row._mapping)


def list_tasks(
    conn: sa.Connection,
    *,
    repo_id: int | None = None,
    state: str | None = None,
    stage: str | None = None,
    limit: int | None = None,
) -> list[TaskRow]:
    """Tasks matching every given filter, oldest first."""
    stmt = sa.select(tasks).order_by(tasks.c.id)
    if repo_id is not None:
        stmt = stmt.where(tasks.c.repo_id == repo_id)
    if state is not None:
        stmt = stmt.where(tasks.c.state == state)
    if stage is not None:
        stmt = stmt.where(tasks.c.stage == stage)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [TaskRow(**row._mapping) for row in conn.execute(stmt)]


def update_task(conn: sa.Connection, task_id: int, *, now: float, **fields: object) -> TaskRow:
    """Set ``fields`` of the task; an unknown or fixed column is a ValueError."""
    values = {**_checked_fields(tasks, fields), "updated_at": now}
    row = _update(conn, tasks, tasks.c.id == task_id, values, f"no task with id {task_id}")
    return TaskRow(**row._mapping)


def count_tasks_by(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """How many tasks stand at each (stage, state)."""
    stmt = sa.select(tasks.c.stage, tasks.c.state, sa.func.count()).group_by(
        tasks.c.stage, tasks.c.state
    )
    return {(stage, state): int(n) for stage, state, n in conn.execute(stmt)}


# ---- dependencies ------------------------------------------------------------------------


_IN_SLICE = 500


@dataclass(frozen=True)
class DepRow:
    """A task another task waits for, and where that task stands now."""

    key: str
    state: str


def get_tasks_by_keys(conn: sa.Connection, keys: Iterable[str]) -> dict[str, TaskRow]:
    """Key → task, for those of ``keys`` that exist."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(tasks).where(tasks.c.key.in_(wanted)))
    return {row.key: TaskRow(**row._mapping) for row in rows}


def insert_deps(conn: sa.Connection, task_id: int, after_ids: Iterable[int]) -> None:
    """Record that the task waits for each of ``after_ids`` to be done."""
    rows = [{"task_id": task_id, "after_id": after} for after in sorted(set(after_ids))]
    if rows:
        conn.execute(sa.insert(task_deps), rows)


def deps_of(conn: sa.Connection, task_id: int) -> list[DepRow]:
    """The tasks ``task_id`` waits for (done or not), in the order they were filed."""
    stmt = (
        sa.select(tasks.c.key, tasks.c.state)
        .select_from(task_deps.join(tasks, tasks.c.id == task_deps.c.after_id))
        .where(task_deps.c.task_id == task_id)
        .order_by(tasks.c.id)
    )
    return [DepRow(key, state) for key, state in conn.execute(stmt)]


def waiting_on(conn: sa.Connection, task_id: int) -> list[DepRow]:
    """The tasks ``task_id`` still waits for: its dependencies that are not done."""
    return [dep for dep in deps_of(conn, task_id) if dep.state != "done"]


def waits_for_dependency(task_id: sa.ColumnElement[int]) -> sa.Exists:
    """SQL: task ``task_id`` (a column of the enclosing query) waits for a task not done.

    For the WHERE of the claim and of ``work_pending``. The primary key of task_deps
    (task_id first) finds a task's few dependencies, the primary key of tasks their states.
    """
    after = tasks.alias("after_task")
    return sa.exists(
        sa.select(task_deps.c.after_id)
        .select_from(task_deps.join(after, after.c.id == task_deps.c.after_id))
        .where(task_deps.c.task_id == task_id, after.c.state != "done")
    )


def dependency_path(conn: sa.Connection, starts: Iterable[int], target: int) -> list[int] | None:
    """A chain of task ids from one of ``starts`` to ``target`` along "waits for" edges.

    A walk over task_deps, breadth first, one query per level: the shortest chain, or None
    when ``target`` cannot be reached. Giving task T the dependencies ``starts`` closes a
    cycle exactly when T is reachable from them; a start equal to ``target`` is the chain
    of one (a task waiting for itself).
    """
    parent: dict[int, int | None] = dict.fromkeys(starts)
    frontier = sorted(parent)
    while frontier:
        if target in parent:
            break
        edges: list[sa.Row[Any]] = []
        # In slices: a wide level must not pass SQLite's limit on bound parameters.
        for i in range(0, len(frontier), _IN_SLICE):
            edges += conn.execute(
                sa.select(task_deps.c.task_id, task_deps.c.after_id).where(
                    task_deps.c.task_id.in_(frontier[i : i + _IN_SLICE])
                )
            ).all()
        nxt = []
        for waiter, after in sorted(edges):
            if after not in parent:
                parent[after] = waiter
                nxt.append(after)
        frontier = nxt
    if target not in parent:
        return None
    path = [target]
    while (step := parent[path[-1]]) is not None:
        path.append(step)
    return path[::-1]


# ---- transitions -------------------------------------------------------------------------


def insert_transition(
    conn: sa.Connection,
    *,
    task_id: int,
    kind: str,
    from_stage: str | None,
    to_stage: str | None,
    from_state: str | None,
    to_state: str | None,
    reasons: Iterable[str],
    actor: str,
    now: float,
    job_id: int | None = None,
) -> TransitionRow:
    """Append one entry to the task's history."""
    stmt = (
        sa.insert(transitions)
        .values(
            task_id=task_id,
            job_id=job_id,
            kind=kind,
            from_stage=from_stage,
            to_stage=to_stage,
            from_state=from_state,
            to_state=to_state,
            reasons=list(reasons),
            actor=actor,
            at=now,
        )
        .returning(*transitions.c)
    )
    return TransitionRow(**conn.execute(stmt).one()._mapping)


def list_transitions(conn: sa.Connection, task_id: int) -> list[TransitionRow]:
    """The task's history, in the order it happened."""
    stmt = sa.select(transitions).where(transitions.c.task_id == task_id).order_by(transitions.c.id)
    return [TransitionRow(**row._mapping) for row in conn.execute(stmt)]


# ---- jobs --------------------------------------------------------------------------------


def insert_job(
    conn: sa.Connection,
    *,
    task_id: int,
    stage: str,
    agent: str,
    attempt: int,
    now: float,
    not_before: float | None = None,
    serial_key: str | None = None,
    fresh_start: str | None = None,
) -> JobRow:
    """Queue a job; it may start once ``now >= not_before`` (None: at once)."""
    stmt = (
        sa.insert(jobs)
        .values(
            task_id=task_id,
            stage=stage,
            agent=agent,
            attempt=attempt,
            state="queued",
            reasons=[],
            not_before=0.0 if not_before is None else not_before,
            cancel_requested=False,
            serial_key=serial_key,
            fresh_start=fresh_start,
            created_at=now,
        )
        .returning(*jobs.c)
    )
    row = JobRow(**conn.execute(stmt).one()._mapping)
    wake.notify(conn, "job-queued")
    return row


def get_job(conn: sa.Connection, job_id: int) -> JobRow | None:
    """The job with id ``job_id``, or None."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one_or_none()
    return None if row is None else JobRow(**row._mapping)


def list_jobs(
    conn: sa.Connection, *, task_id: int | None = None, state: str | None = None
) -> list[JobRow]:
    """Jobs matching every given filter, oldest first."""
    stmt = sa.select(jobs).order_by(jobs.c.id)
    if task_id is not None:
        stmt = stmt.where(jobs.c.task_id == task_id)
    if state is not None:
        stmt = stmt.where(jobs.c.state == state)
    return [JobRow(**row._mapping) for row in conn.execute(stmt)]


def update_job(conn: sa.Connection, job_id: int, **fields: object) -> JobRow:
    """Set ``fields`` of the job; an unknown or fixed column is a ValueError."""
    values = _checked_fields(jobs, fields)
    row = _update(conn, jobs, jobs.c.id == job_id, values, f"no job with id {job_id}")
    return JobRow(**row._mapping)


def next_attempt(conn: sa.Connection, task_id: int, stage: str) -> int:
    """The attempt number the task's next job at ``stage`` gets: 1 for the first."""
    stmt = sa.select(sa.func.max(jobs.c.attempt)).where(
        jobs.c.task_id == task_id, jobs.c.stage == stage
    )
    last = conn.execute(stmt).scalar_one()
    return 1 if last is None else int(last) + 1


# ---- alerts ------------------------------------------------------------------------------


def insert_alert(
    conn: sa.Connection,
    *,
    kind: str,
    severity: str,
    message: str,
    reasons: Iterable[str],
    now: float,
    task_id: int | None = None,
    repo_id: int | None = None,
) -> AlertRow:
    """Record an alert; sinks deliver it later and set ``delivered_at``."""
    stmt = (
        sa.insert(alerts)
        .values(
            task_id=task_id,
            repo_id=repo_id,
            kind=kind,
            severity=severity,
            message=message,
            reasons=list(reasons),
            created_at=now,
            delivery_attempts=0,
            occurrences=1,
        )
        .returning(*alerts.c)
    )
    return AlertRow(**conn.execute(stmt).one()._mapping)


def task_alert(conn: sa.Connection, *, task_id: int, kind: str) -> AlertRow | None:
    """The task's alert of ``kind``: the open one, else the newest resolved one, else None."""
    a = alerts.c
    stmt = (
        sa.select(alerts)
        .where(a.task_id == task_id, a.kind == kind)
        .order_by(sa.case((a.resolved_at.is_(None), 0), else_=1), a.id.desc())
        .limit(1)
    )
    row = conn.execute(stmt).one_or_none()
    return None if row is None else AlertRow(**row._mapping)


def repeat_alert(
    conn: sa.Connection,
    alert_id: int,
    *,
    severity: str,
    message: str,
    reasons: Iterable[str],
    reopen: bool,
) -> AlertRow:
    """Count one more occurrence of an alert, with the newest message and reasons.

    ``reopen`` opens a resolved alert again, as not yet delivered nor acknowledged: it is
    news to whoever resolved it. ``created_at`` stays: it is when the alert was first seen.
    """
    values: dict[str, object] = {
        "severity": severity,
        "message": message,
        "reasons": list(reasons),
        # In SQL, not read-modify-write: a concurrent repeat still counts.
        "occurrences": alerts.c.occurrences + 1,
    }
    if reopen:
        values.update(
            resolved_at=None, delivered_at=None, delivery_attempts=0, acknowledged_at=None
        )
    row = _update(conn, alerts, alerts.c.id == alert_id, values, f"no alert with id {alert_id}")
    return AlertRow(**row._mapping)


def resolve_alerts(
    conn: sa.Connection, *, task_id: int, now: float, kinds: Iterable[str] | None = None
) -> list[int]:
    """Close the task's open alerts (of ``kinds``, None: all); the ids of those closed."""
    where = [alerts.c.task_id == task_id, alerts.c.resolved_at.is_(None)]
    if kinds is not None:
        where.append(alerts.c.kind.in_(sorted(set(kinds))))
    stmt = sa.update(alerts).where(*where).values(resolved_at=now).returning(alerts.c.id)
    return sorted(int(i) for i in conn.execute(stmt).scalars())


def list_alerts(
    conn: sa.Connection,
    *,
    limit: int | None = 100,
    undelivered: bool = False,
    open_only: bool = False,
) -> list[AlertRow]:
    """Alerts, newest first; ``undelivered`` keeps those no sink has delivered yet,
    ``open_only`` those not resolved."""
    stmt = sa.select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id.desc())
    if undelivered:
        stmt = stmt.where(alerts.c.delivered_at.is_(None))
    if open_only:
        stmt = stmt.where(alerts.c.resolved_at.is_(None))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [AlertRow(**row._mapping) for row in conn.execute(stmt)]


def update_alert(conn: sa.Connection, alert_id: int, **fields: object) -> AlertRow:
    """Set ``fields`` of the alert (delivery, acknowledgement); unknown is a ValueError."""
    values = _checked_fields(alerts, fields)
    row = _update(conn, alerts, alerts.c.id == alert_id, values, f"no alert with id {alert_id}")
    return AlertRow(**row._mapping)
