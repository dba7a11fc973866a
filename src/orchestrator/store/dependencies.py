"""Dependencies between tasks: which task waits for which, recorded when a task is filed.

A task filed with ``--after KEY`` has a ``task_deps`` row for each task it waits for; its
jobs are not claimed while one of those is not done (``waits_for_dependency``, the SQL of
the claim and of ``work_pending``). ``dependency_path`` finds the chain a new dependency
would close into a cycle. Each function takes the caller's connection, as ``queries`` do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.store.schema import task_deps, tasks

_IN_SLICE = 500


@dataclass(frozen=True)
class DepRow:
    """A task another task waits for, and where that task stands now."""

    key: str
    state: str


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
