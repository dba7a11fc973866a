"""The global kill switch, worker heartbeats, and the questions the loop asks each tick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.store import wake
from orchestrator.store.dependencies import waits_for_dependency
from orchestrator.store.schema import control, jobs, tasks, workers

PAUSED_KEY = "paused"


# Asked in every claim's transaction: built once.
_PAUSED = sa.select(control.c.value).where(control.c.key == PAUSED_KEY)
_CANCEL_REQUESTED = sa.select(jobs.c.id).where(
    jobs.c.id.in_(sa.bindparam("job_ids", expanding=True)), jobs.c.cancel_requested.is_(True)
)


def is_paused(conn: sa.Connection) -> bool:
    """Whether `orch pause` is in force (for every worker on this database)."""
    return bool(conn.execute(_PAUSED).scalar_one_or_none())


def set_paused(conn: sa.Connection, paused: bool, *, now: float) -> None:
    """Pause or resume claiming, for every worker."""
    updated = conn.execute(
        sa.update(control).where(control.c.key == PAUSED_KEY).values(value=paused, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(control).values(key=PAUSED_KEY, value=paused, updated_at=now))
    if not paused:
        wake.notify(conn, "resumed")


def work_pending(conn: sa.Connection) -> bool:
    """Whether any task can still move: a running job, or a queued one free to be claimed.

    A queued job of a task that waits for another task is not counted: if that task can
    move, its own job is counted; if it cannot (blocked, cancelled, or itself waiting on
    such a task), the waiting job never moves either, and counting it would keep
    `orch run --until-idle` turning forever.
    """
    stmt = sa.select(
        sa.exists(
            sa.select(jobs.c.id)
            .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id))
            .where(
                tasks.c.state.in_(("active", "deferred")),
                sa.or_(
                    jobs.c.state == "running",
                    sa.and_(jobs.c.state == "queued", ~waits_for_dependency(jobs.c.task_id)),
                ),
            )
        )
    )
    return bool(conn.execute(stmt).scalar())


def cancel_requested(conn: sa.Connection, job_ids: Sequence[int]) -> list[int]:
    """Which of these jobs are asked to stop."""
    if not job_ids:
        return []
    return [r[0] for r in conn.execute(_CANCEL_REQUESTED, {"job_ids": list(job_ids)})]


@dataclass(frozen=True)
class WorkerRow:
    """A worker process and its last heartbeat."""

    id: str
    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


def worker_heartbeat(
    conn: sa.Connection,
    worker_id: str,
    *,
    name: str,
    host: str,
    pid: int,
    started_at: float,
    now: float,
) -> None:
    """Record that a worker is alive."""
    updated = conn.execute(
        sa.update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(
            sa.insert(workers).values(
                id=worker_id,
                name=name,
                host=host,
                pid=pid,
                started_at=started_at,
                heartbeat_at=now,
            )
        )


def worker_gone(conn: sa.Connection, worker_id: str) -> None:
    """A worker stopped cleanly."""
    conn.execute(sa.delete(workers).where(workers.c.id == worker_id))


def list_workers(conn: sa.Connection) -> list[WorkerRow]:
    """Workers that have sent a heartbeat, newest first."""
    rows = conn.execute(sa.select(workers).order_by(workers.c.heartbeat_at.desc()))
    return [WorkerRow(**r._mapping) for r in rows]
