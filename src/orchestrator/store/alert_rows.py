"""The alerts table: one open alert per task and kind, repeated, resolved and delivered.

What raises an alert, when it repeats or reopens and where it is sent is
``orchestrator/alerts.py``; here are only its rows: insert one, find the task's alert of a
kind (the open one first), count one more occurrence (reopening a resolved one), resolve,
list, and record delivery or acknowledgement. Each function takes the caller's connection,
as ``queries`` do.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from orchestrator.store.rows import AlertRow, checked_fields, update_row
from orchestrator.store.schema import alerts


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
    row = update_row(conn, alerts, alerts.c.id == alert_id, values, f"no alert with id {alert_id}")
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
    values = checked_fields(alerts, fields)
    row = update_row(conn, alerts, alerts.c.id == alert_id, values, f"no alert with id {alert_id}")
    return AlertRow(**row._mapping)
