"""The dashboard's board: the live tasks by stage, the finished ones, and each one's newest
job. Reads only, in the caller's connection; the board's shape (its columns and cards) is
the dashboard's (``api/dashboard.py``).

The board is polled every few seconds by every open dashboard, so its statements are built
once (SQLAlchemy builds and keys a statement anew on every call unless it is a constant)
and read only the columns a card shows: a task's body and a job's reasons and artifacts
are never decoded for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.domain.stages import LIVE_STATES, TERMINAL_STATES
from orchestrator.store.schema import jobs, repos, tasks

__all__ = [
    "FINISHED_STATES",
    "Counts",
    "Repos",
    "card_repos",
    "counts",
    "finished_cards",
    "live_cards_at",
]

# What the board shows as finished (per stage, it shows the live tasks: LIVE_STATES).
FINISHED_STATES = tuple(sorted(s.value for s in TERMINAL_STATES))
_T = tasks.c
_J = jobs.c

Rows = Sequence[sa.Row[Any]]


def _page_with_newest_job(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """One page of the tasks matching ``where``, the most recently moved first, each with
    its newest job's agent, attempt, state and start (all None: no job yet)."""
    page = (
        sa.select(
            _T.id, _T.key, _T.title, _T.repo_id, _T.stage, _T.state, _T.reasons, _T.updated_at
        )
        .where(*where)
        .order_by(_T.updated_at.desc(), _T.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .offset(sa.bindparam("offset", type_=sa.Integer))
        .subquery("page")
    )
    # The newest job of each task of the page only: looked up by the task_id index after
    # the page is cut, never for the tasks the page leaves out.
    other = jobs.alias("newest")
    newest = (
        sa.select(sa.func.max(other.c.id))
        .where(other.c.task_id == page.c.id)
        .correlate(page)
        .scalar_subquery()
    )
    return (
        sa.select(
            page,
            _J.agent.label("job_agent"),
            _J.attempt.label("job_attempt"),
            _J.state.label("job_state"),
            _J.started_at.label("job_started_at"),
        )
        .select_from(page.outerjoin(jobs, _J.id == newest))
        .order_by(page.c.updated_at.desc(), page.c.id.desc())
    )


_LIVE_AT = _page_with_newest_job(_T.stage == sa.bindparam("stage"), _T.state.in_(LIVE_STATES))
_FINISHED = _page_with_newest_job(_T.state.in_(FINISHED_STATES))
_COUNTS = sa.select(_T.stage, _T.state, sa.func.count()).group_by(_T.stage, _T.state)
_REPOS = sa.select(repos.c.id, repos.c.name, repos.c.stages)


@dataclass(frozen=True)
class Counts:
    """Live tasks (active, deferred, blocked) per stage, and the tasks done or cancelled."""

    live_by_stage: dict[str, int]
    finished: int


def counts(conn: sa.Connection) -> Counts:
    """The board's counts, in one statement."""
    live: dict[str, int] = {}
    finished = 0
    for stage, state, n in conn.execute(_COUNTS):
        if state in FINISHED_STATES:
            finished += int(n)
        elif state in LIVE_STATES:
            live[str(stage)] = live.get(str(stage), 0) + int(n)
    return Counts(live, finished)


@dataclass(frozen=True)
class Repos:
    """Repo id -> name, and every stage some repo's pipeline has."""

    names: dict[int, str]
    stages: set[str]


def card_repos(conn: sa.Connection) -> Repos:
    """The repos' names and the stages in use, in one statement."""
    names: dict[int, str] = {}
    stages: set[str] = set()
    for repo_id, name, repo_stages in conn.execute(_REPOS):
        names[int(repo_id)] = str(name)
        stages.update(repo_stages or [])
    return Repos(names, stages)


def live_cards_at(conn: sa.Connection, stage: str, limit: int, offset: int = 0) -> Rows:
    """The live tasks at ``stage``, the most recently moved first, one page; each row a
    task's card columns (``id``, ``key``, ``title``, ``repo_id``, ``stage``, ``state``,
    ``reasons``, ``updated_at``) and its newest job's (``job_agent``, ``job_attempt``,
    ``job_state``, ``job_started_at``; None without a job)."""
    return conn.execute(_LIVE_AT, {"stage": stage, "limit": limit, "offset": offset}).all()


def finished_cards(conn: sa.Connection, limit: int, offset: int = 0) -> Rows:
    """The tasks done or cancelled, the most recently finished first, one page; rows as
    ``live_cards_at``'s."""
    return conn.execute(_FINISHED, {"limit": limit, "offset": offset}).all()
