"""The model backends' circuit breakers (``domain.breaker``) and the running LLM jobs'
reservations against the day budget, in the caller's transaction.

Both are read and written under one lock per database: on SQLite every write transaction
is ``BEGIN IMMEDIATE`` already; on PostgreSQL ``lock_spend`` takes a transaction-level
advisory lock, so two workers cannot both admit a probe or both reserve the same dollars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.domain.breaker import BackendState, Health
from orchestrator.store.schema import jobs, model_backends

__all__ = [
    "BackendRow",
    "get",
    "list_backends",
    "lock_spend",
    "reserve_job",
    "reserved_usd",
    "save",
    "set_alert",
]

# An arbitrary 64-bit key of the advisory lock that serializes spend and breaker writes.
SPEND_LOCK_KEY = 0x6F7263685F7370


@dataclass(frozen=True)
class BackendRow:
    state: BackendState
    alert_id: int | None
    updated_at: float

    def view(self) -> dict[str, Any]:
        """What `orch backend list`, `orch status` and `GET /status` show of it."""
        st = self.state
        return {
            "name": st.name,
            "health": st.health.value,
            "failures": st.failures,
            "opened_at": st.opened_at,
            # A closed breaker's last probe time means nothing to a reader.
            "probe_at": st.probe_at if st.paused else None,
            "last_error": st.last_error,
        }


def lock_spend(conn: sa.Connection) -> None:
    """Serialize spend reservations and breaker changes until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SPEND_LOCK_KEY)))


def _row(row: sa.RowMapping) -> BackendRow:
    state = BackendState(
        name=row["name"],
        health=Health(row["health"]),
        failures=int(row["failures"]),
        opened_at=row["opened_at"],
        probe_at=row["probe_at"],
        probe_delay_s=row["probe_delay_s"],
        probe_job_id=row["probe_job_id"],
        last_error=row["last_error"],
    )
    return BackendRow(state, row["alert_id"], float(row["updated_at"]))


def get(conn: sa.Connection, name: str) -> BackendRow | None:
    row = (
        conn.execute(sa.select(model_backends).where(model_backends.c.name == name))
        .mappings()
        .one_or_none()
    )
    return None if row is None else _row(row)


def list_backends(conn: sa.Connection) -> list[BackendRow]:
    rows = conn.execute(sa.select(model_backends).order_by(model_backends.c.name)).mappings()
    return [_row(r) for r in rows]


def save(conn: sa.Connection, state: BackendState, *, now: float) -> None:
    """Store ``state`` (insert or update); its alert is left as it is (``set_alert``)."""
    values: dict[str, object] = {
        "health": state.health.value,
        "failures": state.failures,
        "opened_at": state.opened_at,
        "probe_at": state.probe_at,
        "probe_delay_s": state.probe_delay_s,
        "probe_job_id": state.probe_job_id,
        "last_error": state.last_error,
        "updated_at": now,
    }
    updated = conn.execute(
        sa.update(model_backends).where(model_backends.c.name == state.name).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(model_backends).values(name=state.name, **values))


def set_alert(conn: sa.Connection, name: str, alert_id: int | None) -> None:
    """The open alert of backend ``name``'s outage (None: none open)."""
    conn.execute(
        sa.update(model_backends).where(model_backends.c.name == name).values(alert_id=alert_id)
    )


def reserved_usd(conn: sa.Connection, *, but: int | None = None) -> float:
    """What the running LLM jobs (but job ``but``) have reserved against the day budget."""
    where = [jobs.c.state == "running", jobs.c.reserved_usd.is_not(None)]
    if but is not None:
        where.append(jobs.c.id != but)
    total = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(jobs.c.reserved_usd), 0.0)).where(*where)
    ).scalar_one()
    return float(total)


def reserve_job(conn: sa.Connection, job_id: int, amount_usd: float | None) -> None:
    """Record job ``job_id``'s reservation (None: it reserves nothing)."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(reserved_usd=amount_usd))
