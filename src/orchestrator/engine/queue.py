"""Queue a job: the next attempt of a stage for a task, with the agent the repo gives it.

The engine queues the job a move names (``domain.decide.NextJob``) when it applies a job's
end; filing, retrying and approving a task (``tasks``) queue one too. Both take it from
here, so the engine never imports the CLI's operations. ``follow_claim``: how a worker
claims the job it just queued, in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from orchestrator.agents.registry import default_agents, parse_agent_spec
from orchestrator.domain.decide import NextJob
from orchestrator.domain.stages import SERIAL_STAGES, Stage
from orchestrator.store import jobs as jobq
from orchestrator.store import queries
from orchestrator.store.rows import JobRow, RepoRow, TaskRow

__all__ = ["ClaimNext", "agent_for", "follow_claim", "queue_job", "queue_next"]

# Claims a task's next job in the transaction that queued it (the worker's, under its
# lease and limits): (connection, the job, the task as it is now, its repo, the serial key
# of the job whose end this transaction wrote) -> the running job, or None when it may not
# run now.
ClaimNext = Callable[[sa.Connection, JobRow, TaskRow, RepoRow, str | None], JobRow | None]


def agent_for(repo: RepoRow, stage: Stage) -> str:
    """The agent spec a repo gives a stage."""
    spec = repo.agents.get(stage.value) or default_agents((stage,))[stage.value]
    return parse_agent_spec(spec, stage).spec


def queue_job(
    conn: sa.Connection,
    repo: RepoRow,
    task: TaskRow,
    stage: Stage,
    *,
    now: float,
    not_before: float | None = None,
    agent: str | None = None,
    fresh_start: str | None = None,
    notify: bool = True,
) -> JobRow:
    """Queue the next attempt of ``stage`` for a task (``fresh_start``: see jobs.fresh_start;
    ``notify``: see queries.insert_job)."""
    return queries.insert_job(
        conn,
        task_id=task.id,
        stage=stage.value,
        agent=agent or agent_for(repo, stage),
        attempt=None,  # the next at the stage, numbered by the INSERT itself
        now=now,
        not_before=not_before if not_before is not None else now,
        serial_key=repo.name if stage in SERIAL_STAGES else None,
        fresh_start=fresh_start,
        notify=notify,
    )


def queue_next(
    conn: sa.Connection,
    repo: RepoRow,
    task: TaskRow,
    nxt: NextJob,
    *,
    now: float,
    notify: bool = True,
) -> JobRow:
    """Queue the job a move names, due ``nxt.after_s`` from now."""
    return queue_job(
        conn,
        repo,
        task,
        nxt.stage,
        now=now,
        not_before=now + nxt.after_s,
        agent=nxt.agent,
        fresh_start=nxt.fresh_start,
        notify=notify,
    )


def follow_claim(
    *,
    owner: str,
    host: str,
    lease_s: float,
    limits: jobq.ClaimLimits,
    hold_stages: Sequence[str],
    refuse: Callable[[], bool],
) -> ClaimNext:
    """How a worker claims a task's next job with the end of the job before it
    (``jobq.claim_queued_job``, which heeds `orch pause`): when it is due now and
    ``refuse`` (the worker stops, or its settings pause it) says nothing against it."""

    def claim(
        conn: sa.Connection, nxt: JobRow, task: TaskRow, repo: RepoRow, key_ended: str | None
    ) -> JobRow | None:
        # The clock is read inside the transaction, as for any claim.
        now = time.time()
        if nxt.not_before > now or refuse():
            return None
        return jobq.claim_queued_job(
            conn,
            nxt,
            task_state=task.state,
            repo_id=repo.id,
            owner=owner,
            host=host,
            now=now,
            lease_s=lease_s,
            limits=limits,
            hold_stages=hold_stages,
            key_ended=key_ended,
        )

    return claim
