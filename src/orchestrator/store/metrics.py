"""What ``GET /metrics`` counts, read from the database at each scrape.

Plain values and rows, no Prometheus: the API's collector turns them into metric families.
Everything is derived from rows, so the figures survive restarts and add up across every
worker on the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from orchestrator.store.schema import (
    alerts,
    jobs,
    pull_events,
    pull_requests,
    tasks,
    transitions,
    workers,
)

_J = jobs.c
_T = tasks.c


def tasks_by_stage_state(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """(stage, state, how many tasks)."""
    stmt = sa.select(_T.stage, _T.state, sa.func.count()).group_by(_T.stage, _T.state)
    return [(stage, state, int(n)) for stage, state, n in conn.execute(stmt)]


def queue_depth(conn: sa.Connection) -> int:
    """Queued jobs of live tasks (active or deferred)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(jobs.join(tasks, _T.id == _J.task_id))
        .where(_J.state == "queued", _T.state.in_(("active", "deferred")))
    )
    return int(conn.execute(stmt).scalar_one())


def jobs_by_state(conn: sa.Connection) -> dict[str, int]:
    """Job state → how many jobs."""
    stmt = sa.select(_J.state, sa.func.count()).group_by(_J.state)
    return {state: int(n) for state, n in conn.execute(stmt)}


def finished_jobs(conn: sa.Connection) -> list[tuple[str, str, str | None, int]]:
    """(stage, agent, outcome, how many finished jobs); outcome None: ended before it ran."""
    stmt = (
        sa.select(_J.stage, _J.agent, _J.outcome, sa.func.count())
        .where(_J.state == "finished")
        .group_by(_J.stage, _J.agent, _J.outcome)
    )
    return [(stage, agent, outcome, int(n)) for stage, agent, outcome, n in conn.execute(stmt)]


def job_durations(
    conn: sa.Connection, bounds_s: Sequence[float]
) -> list[tuple[str, int, float, list[int]]]:
    """Finished jobs' run times by stage, bucketed in SQL: (stage, how many, their sum in
    seconds, and for each bound how many took at most that long)."""
    duration = _J.finished_at - _J.started_at
    buckets: list[sa.ColumnElement[object]] = [
        sa.func.sum(sa.case((duration <= le, 1), else_=0)) for le in bounds_s
    ]
    stmt = (
        sa.select(_J.stage, sa.func.count(), sa.func.sum(duration), *buckets)
        .where(_J.state == "finished", _J.started_at.is_not(None), _J.finished_at.is_not(None))
        .group_by(_J.stage)
    )
    return [
        (row[0], int(row[1]), float(row[2] or 0.0), [int(n or 0) for n in row[3:]])
        for row in conn.execute(stmt)
    ]


def transitions_by_kind(conn: sa.Connection) -> list[tuple[str, int]]:
    """(transition kind, how many)."""
    kind = transitions.c.kind
    return [(k, int(n)) for k, n in conn.execute(sa.select(kind, sa.func.count()).group_by(kind))]


def llm_use_by_agent(conn: sa.Connection) -> list[tuple[str, float, int, int]]:
    """(agent, cost in USD, tokens in, tokens out) over the jobs that reported a cost."""
    stmt = (
        sa.select(
            _J.agent,
            sa.func.coalesce(sa.func.sum(_J.cost_usd), 0.0),
            sa.func.coalesce(sa.func.sum(_J.tokens_in), 0),
            sa.func.coalesce(sa.func.sum(_J.tokens_out), 0),
        )
        .where(_J.cost_usd.is_not(None))
        .group_by(_J.agent)
    )
    return [(a, float(usd), int(tin), int(tout)) for a, usd, tin, tout in conn.execute(stmt)]


def alerts_by_kind(conn: sa.Connection) -> list[tuple[str, str, int, int]]:
    """(kind, severity, occurrences raised, alerts still open)."""
    a = alerts.c
    stmt = sa.select(
        a.kind,
        a.severity,
        sa.func.sum(a.occurrences),
        sa.func.sum(sa.case((a.resolved_at.is_(None), 1), else_=0)),
    ).group_by(a.kind, a.severity)
    return [
        (kind, severity, int(raised or 0), int(still_open or 0))
        for kind, severity, raised, still_open in conn.execute(stmt)
    ]


def live_workers(conn: sa.Connection, since: float) -> int:
    """Workers whose last heartbeat is at ``since`` or later."""
    stmt = sa.select(sa.func.count()).select_from(workers).where(workers.c.heartbeat_at >= since)
    return int(conn.execute(stmt).scalar_one())


def pull_events_by_kind(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """(kind, name) → how many pull-request events, each counted once when the landing
    first saw it (``store.pulls``); ``name`` is the check's for check-failed, "" for the
    other kinds (a reviewer is no label: one per person would grow without end)."""
    e = pull_events.c
    stmt = sa.select(e.kind, e.name, sa.func.count()).group_by(e.kind, e.name)
    out: dict[tuple[str, str], int] = {}
    for kind, name, n in conn.execute(stmt):
        label = name if kind == "check-failed" else ""
        out[kind, label] = out.get((kind, label), 0) + int(n)
    return out


def pull_requests_by_state(conn: sa.Connection) -> dict[str, int]:
    """Tasks' pull requests by state, as the landing last read them."""
    p = pull_requests.c
    stmt = sa.select(p.state, sa.func.count()).group_by(p.state)
    return {state: int(n) for state, n in conn.execute(stmt)}
