"""Whether an LLM job may start now: its budgets, its backend's breaker, its spend cap.

One transaction under the spend lock (an advisory lock on PostgreSQL), so parallel workers
see each other's reservations: a job refused (its LLM budget is spent: the task blocks),
waiting (its backend is paused, or the day budget is held by running jobs: re-queued for
later, no retry spent), or started with the cap it may spend. The decisions are pure
(``domain.budget``, ``domain.breaker``); here they are read and stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.domain import breaker
from orchestrator.domain.budget import check_budgets, reserve
from orchestrator.store import breakers, spend
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow

__all__ = ["Admitted", "admit_llm"]


@dataclass(frozen=True)
class Admitted:
    """An LLM job's admission: refused (its budget is spent), waiting (re-queued for later),
    or started with what it may spend."""

    refusal: list[str] | None = None
    waiting: bool = False
    task_left_usd: float | None = None
    cap_usd: float | None = None
    notes: list[str] = field(default_factory=list)


def _wait(conn: sa.Connection, job: JobRow, owner: str, why: str, until: float) -> None:
    """Put a claimed job back to wait until ``until``; no retry is spent."""
    jobq.requeue(
        conn, job.id, now=time.time(), owner=owner, reason=f"waiting: {why}", not_before=until
    )


def admit_llm(
    engine: sa.Engine, st: Settings, job: JobRow, task_id: int, backend: str, *, owner: str
) -> Admitted:
    """Whether ``job`` (claimed by ``owner``), which calls ``backend``, may start now."""
    with engine.begin() as conn:
        breakers.lock_spend(conn)
        now = time.time()
        task_spent = spend.task_spend_usd(conn, task_id)
        day_spent = spend.day_spend_usd(conn, since=now - spend.DAY_S)
        check = check_budgets(
            task_spent_usd=task_spent,
            day_spent_usd=day_spent,
            task_budget_usd=st.llm_budget_per_task_usd,
            day_budget_usd=st.llm_budget_per_day_usd,
        )
        if not check.ok:
            return Admitted(refusal=["not dispatched: LLM budget", *check.reasons])
        row = breakers.get(conn, backend)
        admission, probing = breaker.admit(row.state if row else None, job.id, now)
        if not admission.run:
            until = admission.wait_until if admission.wait_until is not None else now
            _wait(conn, job, owner, "; ".join(admission.reasons), until)
            return Admitted(waiting=True)
        if probing is not None:
            breakers.save(conn, probing, now=now)
        task_left = (
            st.llm_budget_per_task_usd - task_spent if st.llm_budget_per_task_usd > 0 else None
        )
        day_left = st.llm_budget_per_day_usd - day_spent if st.llm_budget_per_day_usd > 0 else None
        cap, no_room = reserve(
            task_left_usd=task_left,
            day_left_usd=day_left,
            reserved_by_others_usd=breakers.reserved_usd(conn, but=job.id),
        )
        if no_room is not None:
            _wait(conn, job, owner, no_room, now + st.poll_interval_s)
            return Admitted(waiting=True)
        breakers.reserve_job(conn, job.id, cap)
        return Admitted(task_left_usd=task_left, cap_usd=cap, notes=list(admission.reasons))
