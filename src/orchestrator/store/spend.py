"""What LLM jobs cost: sums of ``jobs.cost_usd`` for the budget checks and ``orch status``.

Each function takes the caller's connection and commits nothing. A job with no cost (a
runner, a ``command`` agent, a CLI that reported none) counts as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from orchestrator.store.schema import jobs

__all__ = ["Spend", "day_spend_usd", "task_spend", "task_spend_usd"]


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


def task_spend(conn: sa.Connection, task_id: int) -> Spend:
    """Everything the task's jobs cost so far, every stage and attempt."""
    return _sum(jobs.c.task_id == task_id, conn)


def task_spend_usd(conn: sa.Connection, task_id: int) -> float:
    """USD the task's jobs cost so far."""
    return task_spend(conn, task_id).cost_usd


def day_spend_usd(conn: sa.Connection, since: float) -> float:
    """USD spent by jobs of every task that finished at or after ``since`` (epoch seconds).

    The caller picks the window (``now - 86400`` for a rolling day) so tests control time.
    """
    return _sum(jobs.c.finished_at >= since, conn).cost_usd
