"""Small reads and writes of repos, tasks, their history and jobs, each taking the caller's
``sa.Connection``.

Callers own transactions: the engine composes "finish job + record transition + queue next
job" from these functions inside one ``engine.begin()`` block, so no function here commits.
Every function returns frozen row dataclasses (``rows.py``) whose fields mirror the table's
columns. Times come from the caller's ``now`` (epoch seconds), never from the database
clock. Dependencies between tasks are ``dependencies``; alerts are ``alert_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import NotFoundError
from orchestrator.store import wake
from orchestrator.store.rows import (
    JobRow,
    RepoRow,
    TaskRow,
    TransitionRow,
    checked_fields,
    update_row,
)
from orchestrator.store.schema import jobs, repos, tasks, transitions


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
    values = {**checked_fields(repos, fields), "updated_at": now}
    row = update_row(conn, repos, repos.c.name == name, values, f"no repo named {name!r}")
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
    requester: str | None = None,
    forge_issue: int | None = None,
    forge_url: str | None = None,
) -> TaskRow:
    """Add a task with the repo's next key, and its ``create`` transition.

    ``forge_issue``: the forge issue it is filed from; a second task of the same issue of
    the repo is an ``IntegrityError`` (the unique index), which rolls the key back too.
    """
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
            requester=requester,
            forge_issue=forge_issue,
            forge_url=forge_url,
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


def get_task_by_issue(conn: sa.Connection, repo_id: int, issue: int) -> TaskRow | None:
    """The task filed from forge issue ``issue`` of the repo, or None."""
    stmt = sa.select(tasks).where(tasks.c.repo_id == repo_id, tasks.c.forge_issue == issue)
    row = conn.execute(stmt).one_or_none()
    return None if row is None else TaskRow(**row._mapping)


def list_issue_tasks(
    conn: sa.Connection, repo_id: int, *, states: Sequence[str] | None = None
) -> list[TaskRow]:
    """The repo's tasks filed from forge issues (in ``states``, when given), oldest first."""
    stmt = (
        sa.select(tasks)
        .where(tasks.c.repo_id == repo_id, tasks.c.forge_issue.is_not(None))
        .order_by(tasks.c.id)
    )
    if states is not None:
        stmt = stmt.where(tasks.c.state.in_(list(states)))
    return [TaskRow(**row._mapping) for row in conn.execute(stmt)]


# Read on every job's start and end: built once (see store.jobs on constant statements).
_TASK_BY_ID = sa.select(tasks).where(tasks.c.id == sa.bindparam("task_id"))
_TASK_AND_REPO = (
    sa.select(*tasks.c, *repos.c)
    .select_from(tasks.join(repos, repos.c.id == tasks.c.repo_id))
    .where(tasks.c.id == sa.bindparam("task_id"))
)
_TASK_COLUMNS = len(tasks.c)


def get_task_by_id(conn: sa.Connection, task_id: int) -> TaskRow | None:
    """The task with id ``task_id``, or None."""
    row = conn.execute(_TASK_BY_ID, {"task_id": task_id}).one_or_none()
    return None if row is None else TaskRow(**row._mapping)


def get_task_and_repo(conn: sa.Connection, task_id: int) -> tuple[TaskRow, RepoRow] | None:
    """The task with id ``task_id`` and its repo, in one read; None when there is none."""
    row = conn.execute(_TASK_AND_REPO, {"task_id": task_id}).one_or_none()
    if row is None:
        return None
    # By position: both tables have an ``id`` and a ``name``-like column of their own.
    task = TaskRow(**dict(zip(tasks.c.keys(), row[:_TASK_COLUMNS], strict=True)))
    repo = RepoRow(**dict(zip(repos.c.keys(), row[_TASK_COLUMNS:], strict=True)))
    return task, repo


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


# A task's move (``history.record_transition``), on every job's end: built once. The
# counters are set only by a move that says them, so a concurrent change is not undone.
_MOVE_TASK = (
    sa.update(tasks)
    .where(tasks.c.id == sa.bindparam("b_id"))
    .values(
        stage=sa.bindparam("b_stage"),
        state=sa.bindparam("b_state"),
        reasons=sa.bindparam("b_reasons", type_=tasks.c.reasons.type),
        updated_at=sa.bindparam("b_now"),
    )
    .returning(*tasks.c)
)
_MOVE_TASK_COUNTING = _MOVE_TASK.values(
    developer_retries=sa.bindparam("b_developer"),
    infra_retries=sa.bindparam("b_infra"),
    gate_retries=sa.bindparam("b_gate"),
)


def move_task(
    conn: sa.Connection,
    task_id: int,
    *,
    now: float,
    stage: str,
    state: str,
    reasons: Sequence[str],
    retries: tuple[int, int, int] | None = None,
) -> TaskRow:
    """Set the task's stage, state and reasons, and with ``retries`` its (developer, infra,
    gate) retry counters: ``update_task`` for a move, with a statement built once."""
    params: dict[str, object] = {
        "b_id": task_id,
        "b_stage": stage,
        "b_state": state,
        "b_reasons": list(reasons),
        "b_now": now,
    }
    stmt = _MOVE_TASK
    if retries is not None:
        stmt = _MOVE_TASK_COUNTING
        params.update(b_developer=retries[0], b_infra=retries[1], b_gate=retries[2])
    row = conn.execute(stmt, params).one_or_none()
    if row is None:
        msg = f"no task with id {task_id}"
        raise NotFoundError(msg)
    return TaskRow(**row._mapping)


def update_task(conn: sa.Connection, task_id: int, *, now: float, **fields: object) -> TaskRow:
    """Set ``fields`` of the task; an unknown or fixed column is a ValueError."""
    values = {**checked_fields(tasks, fields), "updated_at": now}
    row = update_row(conn, tasks, tasks.c.id == task_id, values, f"no task with id {task_id}")
    return TaskRow(**row._mapping)


def count_tasks_by(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """How many tasks stand at each (stage, state)."""
    stmt = sa.select(tasks.c.stage, tasks.c.state, sa.func.count()).group_by(
        tasks.c.stage, tasks.c.state
    )
    return {(stage, state): int(n) for stage, state, n in conn.execute(stmt)}


def get_tasks_by_keys(conn: sa.Connection, keys: Iterable[str]) -> dict[str, TaskRow]:
    """Key → task, for those of ``keys`` that exist."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(tasks).where(tasks.c.key.in_(wanted)))
    return {row.key: TaskRow(**row._mapping) for row in rows}


# ---- transitions -------------------------------------------------------------------------


_INSERT_TRANSITION = sa.insert(transitions).returning(*transitions.c)


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
    params = {
        "task_id": task_id,
        "job_id": job_id,
        "kind": kind,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "from_state": from_state,
        "to_state": to_state,
        "reasons": list(reasons),
        "actor": actor,
        "at": now,
    }
    return TransitionRow(**conn.execute(_INSERT_TRANSITION, params).one()._mapping)


def list_transitions(conn: sa.Connection, task_id: int) -> list[TransitionRow]:
    """The task's history, in the order it happened."""
    stmt = sa.select(transitions).where(transitions.c.task_id == task_id).order_by(transitions.c.id)
    return [TransitionRow(**row._mapping) for row in conn.execute(stmt)]


# ---- jobs --------------------------------------------------------------------------------


_INSERT_JOB = sa.insert(jobs).returning(*jobs.c)
_EARLIER = jobs.alias("earlier")
# The task's next attempt at the stage (1 for the first), worked out by the INSERT itself:
# one statement, not a SELECT and then the INSERT (a round trip each on PostgreSQL).
_INSERT_NEXT_JOB = (
    sa.insert(jobs)
    .values(
        attempt=sa.select(sa.func.coalesce(sa.func.max(_EARLIER.c.attempt), 0) + 1)
        .where(
            _EARLIER.c.task_id == sa.bindparam("b_task_id"),
            _EARLIER.c.stage == sa.bindparam("b_stage"),
        )
        .scalar_subquery()
    )
    .returning(*jobs.c)
)


def insert_job(
    conn: sa.Connection,
    *,
    task_id: int,
    stage: str,
    agent: str,
    attempt: int | None,
    now: float,
    not_before: float | None = None,
    serial_key: str | None = None,
    fresh_start: str | None = None,
    notify: bool = True,
) -> JobRow:
    """Queue a job; it may start once ``now >= not_before`` (None: at once).

    ``attempt``: None for the task's next at the stage (``next_attempt``'s number).
    ``notify``: tell the other workers (PostgreSQL); off when the caller claims the job
    itself in the same transaction, so that nobody wakes for a job already taken."""
    params: dict[str, object] = {
        "task_id": task_id,
        "stage": stage,
        "agent": agent,
        "state": "queued",
        "reasons": [],
        "not_before": 0.0 if not_before is None else not_before,
        "cancel_requested": False,
        "serial_key": serial_key,
        "fresh_start": fresh_start,
        "created_at": now,
    }
    if attempt is None:
        statement = _INSERT_NEXT_JOB
        params.update(b_task_id=task_id, b_stage=stage)
    else:
        statement = _INSERT_JOB
        params["attempt"] = attempt
    row = JobRow(**conn.execute(statement, params).one()._mapping)
    if notify:
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
    values = checked_fields(jobs, fields)
    row = update_row(conn, jobs, jobs.c.id == job_id, values, f"no job with id {job_id}")
    return JobRow(**row._mapping)


_LAST_ATTEMPT = sa.select(sa.func.max(jobs.c.attempt)).where(
    jobs.c.task_id == sa.bindparam("task_id"), jobs.c.stage == sa.bindparam("stage")
)


def next_attempt(conn: sa.Connection, task_id: int, stage: str) -> int:
    """The attempt number the task's next job at ``stage`` gets: 1 for the first."""
    last = conn.execute(_LAST_ATTEMPT, {"task_id": task_id, "stage": stage}).scalar_one()
    return 1 if last is None else int(last) + 1
