"""What LLM jobs cost: sums of ``jobs.cost_usd`` for the budget checks, ``orch status``,
``orch task show``, the API and the dashboard.

Each function takes the caller's connection and commits nothing. A job with no cost (a
runner, a ``command`` agent, a CLI that reported none) counts as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.store.schema import jobs, tasks

__all__ = [
    "DAY_S",
    "TOP_TASKS",
    "Spend",
    "TaskSpend",
    "day_spend",
    "day_spend_usd",
    "task_spend",
    "task_spend_usd",
    "top_live_task_spend",
    "total_spend",
]

# The day budget's window: jobs that finished in the last 24 hours, a rolling day.
DAY_S = 86_400.0
# How many of the live tasks that spent most `orch status`, `/status` and the board name.
TOP_TASKS = 3


@dataclass(frozen=True)
class Spend:
    """Money and tokens over a set of jobs."""

    cost_usd: float
    tokens_in: int
    tokens_out: int
    jobs_with_cost: int


def _sum(where: sa.ColumnElement[bool], conn: sa.Connection) -> Spend:
    row = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(jobs.c.cost_usd), 0.0),
            sa.func.coalesce(sa.func.sum(jobs.c.tokens_in), 0),
            sa.func.coalesce(sa.func.sum(jobs.c.tokens_out), 0),
            sa.func.count(jobs.c.cost_usd),
        ).where(where)
    ).one()
    return Spend(float(row[0]), int(row[1]), int(row[2]), int(row[3]))


def total_spend(conn: sa.Connection) -> Spend:
    """Everything every job ever cost."""
    return _sum(sa.true(), conn)


def task_spend(conn: sa.Connection, task_id: int) -> Spend:
    """Everything the task's jobs cost so far, every stage and attempt."""
    return _sum(jobs.c.task_id == task_id, conn)


def task_spend_usd(conn: sa.Connection, task_id: int) -> float:
    """USD the task's jobs cost so far."""
    return task_spend(conn, task_id).cost_usd


def day_spend(conn: sa.Connection, since: float) -> Spend:
    """Money and tokens of jobs of every task that finished at or after ``since`` (epoch s).

    The caller picks the window (``now - DAY_S`` for the day budget's) so tests control time.
    """
    return _sum(jobs.c.finished_at >= since, conn)


def day_spend_usd(conn: sa.Connection, since: float) -> float:
    """USD spent by jobs of every task that finished at or after ``since`` (epoch seconds)."""
    return day_spend(conn, since).cost_usd


@dataclass(frozen=True)
class TaskSpend:
    """One task and everything its jobs cost (what its per-task budget counts)."""

    key: str
    state: str
    spend: Spend


def top_live_task_spend(conn: sa.Connection, limit: int = TOP_TASKS) -> list[TaskSpend]:
    """The live tasks (not done, not cancelled: their budget still matters) that spent most,
    most first; those that spent nothing are left out."""
    j, t = jobs.c, tasks.c
    total = sa.func.sum(j.cost_usd)
    stmt = (
        sa.select(
            t.key,
            t.state,
            total,
            sa.func.coalesce(sa.func.sum(j.tokens_in), 0),
            sa.func.coalesce(sa.func.sum(j.tokens_out), 0),
            sa.func.count(j.cost_usd),
        )
        .select_from(tasks.join(jobs, j.task_id == t.id))
        .where(t.state.not_in(("done", "cancelled")), j.cost_usd.is_not(None))
        .group_by(t.id, t.key, t.state)
        .having(total > 0)
        .order_by(total.desc(), t.id)
        .limit(limit)
    )
    return [
        TaskSpend(key, state, Spend(float(usd), int(tin), int(tout), int(n)))
        for key, state, usd, tin, tout, n in conn.execute(stmt)
    ]
