"""The dashboard's board: the live tasks by stage, the finished ones, and each one's newest
job. Reads only, in the caller's connection; the board's shape (its columns and cards) is
the dashboard's (``api/dashboard.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from orchestrator.domain.stages import LIVE_STATES, TERMINAL_STATES
from orchestrator.store.rows import JobRow, TaskRow
from orchestrator.store.schema import jobs, repos, tasks

__all__ = [
    "FINISHED_STATES",
    "finished_count",
    "finished_tasks",
    "latest_jobs",
    "live_counts_by_stage",
    "live_tasks_at",
    "stages_in_use",
]

# What the board shows as finished (per stage, it shows the live tasks: LIVE_STATES).
FINISHED_STATES = tuple(s.value for s in TERMINAL_STATES)
_T = tasks.c


def latest_jobs(conn: sa.Connection, task_ids: Sequence[int]) -> dict[int, JobRow]:
    """Task id -> its newest job, for the given tasks."""
    if not task_ids:
        return {}
    newest = (
        sa.select(sa.func.max(jobs.c.id))
        .where(jobs.c.task_id.in_(list(task_ids)))
        .group_by(jobs.c.task_id)
        .scalar_subquery()
    )
    rows = conn.execute(sa.select(jobs).where(jobs.c.id.in_(newest)))
    return {r.task_id: JobRow(**r._mapping) for r in rows}


def stages_in_use(conn: sa.Connection) -> set[str]:
    """Every stage some repo's pipeline has."""
    found: set[str] = set()
    for stages in conn.execute(sa.select(repos.c.stages)).scalars():
        found.update(stages or [])
    return found


def live_counts_by_stage(conn: sa.Connection) -> dict[str, int]:
    """Live tasks (active, deferred, blocked) per stage."""
    stmt = sa.select(_T.stage, sa.func.count()).where(_T.state.in_(LIVE_STATES)).group_by(_T.stage)
    return {str(stage): int(n) for stage, n in conn.execute(stmt)}


def live_tasks_at(conn: sa.Connection, stage: str, limit: int, offset: int = 0) -> list[TaskRow]:
    """The live tasks at ``stage``, the most recently moved first; one page."""
    stmt = (
        sa.select(tasks)
        .where(_T.stage == stage, _T.state.in_(LIVE_STATES))
        .order_by(_T.updated_at.desc(), _T.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [TaskRow(**r._mapping) for r in conn.execute(stmt)]


def finished_count(conn: sa.Connection) -> int:
    """Tasks done or cancelled."""
    stmt = sa.select(sa.func.count()).select_from(tasks).where(_T.state.in_(FINISHED_STATES))
    return int(conn.execute(stmt).scalar_one())


def finished_tasks(conn: sa.Connection, limit: int, offset: int = 0) -> list[TaskRow]:
    """The tasks done or cancelled, the most recently finished first; one page."""
    stmt = (
        sa.select(tasks)
        .where(_T.state.in_(FINISHED_STATES))
        .order_by(_T.updated_at.desc(), _T.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [TaskRow(**r._mapping) for r in conn.execute(stmt)]
