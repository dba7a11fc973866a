"""Queue a job: the next attempt of a stage for a task, with the agent the repo gives it.

The engine queues the job a move names (``domain.decide.NextJob``) when it applies a job's
end; filing, retrying and approving a task (``tasks``) queue one too. Both take it from
here, so the engine never imports the CLI's operations.
"""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.agents.registry import default_agents, parse_agent_spec
from orchestrator.domain.decide import NextJob
from orchestrator.domain.stages import SERIAL_STAGES, Stage
from orchestrator.store import queries
from orchestrator.store.rows import JobRow, RepoRow, TaskRow

__all__ = ["agent_for", "queue_job", "queue_next"]


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
    attempt = queries.next_attempt(conn, task.id, stage.value)
    return queries.insert_job(
        conn,
        task_id=task.id,
        stage=stage.value,
        agent=agent or agent_for(repo, stage),
        attempt=attempt,
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
