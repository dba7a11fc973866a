"""Webhook deliveries already taken, so a delivery the forge sends again is acted on once.

A delivery is claimed before it is acted on (``claim_delivery``): the row's primary key is
the forge's delivery id, so of two copies arriving at once only one insert succeeds. If
acting on it then fails, ``forget_delivery`` gives the claim back, and the forge's own
redelivery can try again.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.store.schema import webhook_deliveries


def claim_delivery(conn: sa.Connection, delivery_id: str, event: str, *, now: float) -> bool:
    """Record delivery ``delivery_id``; False when it was recorded already (a copy).

    Runs in a SAVEPOINT, so the caller's transaction survives a copy's refused insert
    (PostgreSQL aborts the whole transaction on an error otherwise).
    """
    if conn.execute(
        sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.id == delivery_id)
    ).first():
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(webhook_deliveries).values(id=delivery_id, event=event, received_at=now)
            )
    except sa.exc.IntegrityError:
        # The same delivery, inserted by another request between our read and our insert.
        return False
    return True


def forget_delivery(conn: sa.Connection, delivery_id: str) -> None:
    """Give a claim back: acting on the delivery failed, and a redelivery may try again."""
    conn.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id))


def delivery_count(conn: sa.Connection) -> int:
    """How many deliveries were taken (for tests and the status page)."""
    stmt = sa.select(sa.func.count()).select_from(webhook_deliveries)
    return int(conn.execute(stmt).scalar_one())
