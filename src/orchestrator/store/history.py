"""Store a task's move: the one way a task changes stage or state.

``domain.decide`` decides a move (after a job's end, or on a human's cancel, retry or
approve); ``record_transition`` writes it in the caller's transaction: the jobs it stops or
drops, the alerts it resolves, the task's new place and retry counters, and its entry in
the task's history. Queuing the job that follows is the engine's (``engine.queue``).
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.domain.decide import Move
from orchestrator.store import alert_rows, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import TaskRow

__all__ = ["record_transition"]


def record_transition(
    conn: sa.Connection,
    task: TaskRow,
    move: Move,
    *,
    actor: str,
    now: float,
    job_id: int | None = None,
) -> TaskRow:
    """Write ``move`` of ``task`` (as read in this transaction); the task as it is now.

    ``job_id``: the job whose end made the move (None: a human's command)."""
    if move.cancel_running:
        jobq.request_cancel(conn, task.id, now=now)
    if move.drop_queued is not None:
        jobq.drop_queued(conn, task.id, now=now, reason=move.drop_queued)
    if move.resolve_alerts:
        alert_rows.resolve_alerts(conn, task_id=task.id, now=now, kinds=None)
    retries = None
    if move.retries is not None:
        retries = (move.retries.developer, move.retries.infra, move.retries.gate)
    fresh = queries.move_task(
        conn,
        task.id,
        now=now,
        stage=move.to_stage.value,
        state=move.to_state.value,
        reasons=list(move.reasons),
        retries=retries,
    )
    queries.insert_transition(
        conn,
        task_id=task.id,
        job_id=job_id,
        kind=move.kind,
        from_stage=move.from_stage.value,
        to_stage=move.to_stage.value,
        from_state=task.state,
        to_state=move.to_state.value,
        reasons=move.reasons,
        actor=actor,
        now=now,
    )
    return fresh
