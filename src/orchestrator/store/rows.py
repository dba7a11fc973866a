"""The rows of the store's tables as frozen dataclasses, and the one checked way to change one.

Each dataclass mirrors its table's columns (``schema.py``): a row read is
``XRow(**row._mapping)``. ``checked_fields`` refuses a column that does not exist or must
never change (identity, history, the key allocator); ``update_row`` updates one row and
returns it as it is now. The reads and writes that use them take the caller's connection:
``queries`` (repos, tasks, their history, jobs), ``dependencies`` and ``alert_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import NotFoundError


@dataclass(frozen=True)
class RepoRow:
    """A managed repository."""

    id: int
    name: str
    path: str
    main_branch: str
    remote: str | None
    key_prefix: str
    next_task_number: int
    test_cmd: list[str] | None
    staging_cmd: list[str] | None
    deploy_cmd: list[str] | None
    health_url: str | None
    stages: list[str]
    agents: dict[str, str]
    agent_env: list[str]
    options: dict[str, Any]
    self_hosting: bool
    created_at: float
    updated_at: float
    main_seen: str | None = None


@dataclass(frozen=True)
class TaskRow:
    """A task (ticket) and where it stands."""

    id: int
    key: str
    repo_id: int
    number: int
    title: str
    body: str
    stage: str
    state: str
    reasons: list[str]
    developer_retries: int
    infra_retries: int
    created_at: float
    updated_at: float
    gate_retries: int = 0
    author: str | None = None
    # Who asked for it (a forge issue's author), and the issue it was filed from.
    requester: str | None = None
    forge_issue: int | None = None
    forge_url: str | None = None


@dataclass(frozen=True)
class JobRow:
    """One run of one agent for one task at one stage."""

    id: int
    task_id: int
    stage: str
    agent: str
    attempt: int
    state: str
    outcome: str | None
    verdict: str | None
    reasons: list[str]
    exit_code: int | None
    pid: int | None
    pgid: int | None
    host: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    not_before: float
    cancel_requested: bool
    serial_key: str | None
    log_path: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cost_usd: float | None
    tokens_in: int | None
    tokens_out: int | None
    fresh_start: str | None = None
    artifacts: dict[str, str] | None = None
    reserved_usd: float | None = None


@dataclass(frozen=True)
class TransitionRow:
    """One entry of a task's append-only history."""

    id: int
    task_id: int
    job_id: int | None
    kind: str
    from_stage: str | None
    to_stage: str | None
    from_state: str | None
    to_state: str | None
    reasons: list[str]
    actor: str
    at: float


@dataclass(frozen=True)
class AlertRow:
    """Something a human must see."""

    id: int
    task_id: int | None
    repo_id: int | None
    kind: str
    severity: str
    message: str
    reasons: list[str]
    created_at: float
    delivered_at: float | None
    delivery_attempts: int
    acknowledged_at: float | None
    resolved_at: float | None = None
    occurrences: int = 1


# Columns that update_* refuse: identity, history, and the key allocator (only insert_task
# may move next_task_number, or two tasks could get one key).
_FIXED = {
    "repos": frozenset({"id", "next_task_number", "created_at", "updated_at"}),
    # Where a task came from is part of its identity: one task per forge issue.
    "tasks": frozenset(
        {
            "id",
            "key",
            "repo_id",
            "number",
            "created_at",
            "updated_at",
            "requester",
            "forge_issue",
            "forge_url",
        }
    ),
    "jobs": frozenset({"id", "task_id", "stage", "attempt", "created_at"}),
    "alerts": frozenset({"id", "task_id", "repo_id", "created_at"}),
}


def checked_fields(table: sa.Table, fields: Mapping[str, object]) -> dict[str, object]:
    """``fields`` as an update stores them; an unknown or fixed column is a ValueError."""
    fixed = _FIXED[table.name]
    unknown = sorted(set(fields) - set(table.c.keys()))
    if unknown:
        msg = f"unknown {table.name} column(s): {', '.join(unknown)}"
        raise ValueError(msg)
    refused = sorted(set(fields) & fixed)
    if refused:
        msg = f"{table.name} column(s) not updatable: {', '.join(refused)}"
        raise ValueError(msg)
    return {name: _jsonable(value) for name, value in fields.items()}


def update_row(
    conn: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: Mapping[str, object],
    missing: str,
) -> sa.Row[Any]:
    """UPDATE one row and return it as it is now; NotFoundError(missing) when absent."""
    # An UPDATE needs a SET; "id = id" makes an empty update a plain existence check.
    to_set: Mapping[str, object] = values or {"id": table.c.id}
    stmt = sa.update(table).where(where).values(to_set).returning(*table.c)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFoundError(missing)
    return row


def _jsonable(value: object) -> object:
    # Tuples are the natural immutable argv; JSON columns store them as lists.
    return list(value) if isinstance(value, tuple) else value
