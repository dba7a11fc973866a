"""Each task's pull request as the landing last read it, and what the landing saw happen.

``record_pull`` is the one writer (``gates/pull_record.py`` calls it, each time the landing
reads a pull request's checks and reviews, and once more after it merges): an upsert of
the task's ``pull_requests`` row, and an insert-if-absent of ``pull_events``, so each
thing is counted once however often it is read again. ``get_pull`` is what `orch task
show`, the API and the dashboard read; ``PullRow.view`` the shape all three show.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.store.schema import pull_events, pull_requests

__all__ = [
    "CHANGES_REQUESTED",
    "EXPECTED",
    "FAILURE",
    "PullCheck",
    "PullReview",
    "PullRow",
    "PullSeen",
    "get_pull",
    "list_pull_events",
    "record_pull",
]

# A required check the forge has not reported on the head yet (GitHub's word for it).
EXPECTED = "expected"
FAILURE = "failure"
CHANGES_REQUESTED = "CHANGES_REQUESTED"
MERGED = "merged"


@dataclass(frozen=True)
class PullCheck:
    """One check on the head: ``state`` pending, success, failure, or expected (required,
    not reported yet)."""

    name: str
    state: str
    summary: str = ""
    required: bool = False
    details_url: str | None = None


@dataclass(frozen=True)
class PullReview:
    """One submitted review, and the head it was given on."""

    id: int
    author: str
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED
    commit_sha: str


@dataclass(frozen=True)
class PullSeen:
    """A pull request as the landing read it: what ``record_pull`` stores."""

    number: int
    url: str
    head_sha: str
    state: str  # open, merged, closed
    checks: tuple[PullCheck, ...] = ()
    reviews: tuple[PullReview, ...] = ()
    merged_sha: str | None = None


@dataclass(frozen=True)
class PullRow:
    """A task's ``pull_requests`` row."""

    task_id: int
    number: int
    url: str
    head_sha: str
    state: str
    checks: tuple[PullCheck, ...]
    reviews: tuple[PullReview, ...]
    merged_sha: str | None
    opened_at: float
    updated_at: float
    merged_at: float | None

    @classmethod
    def of(cls, row: sa.RowMapping) -> PullRow:
        """The dataclass of a row read from ``pull_requests``."""
        values = dict(row)
        values["checks"] = tuple(PullCheck(**c) for c in values["checks"] or [])
        values["reviews"] = tuple(PullReview(**r) for r in values["reviews"] or [])
        return cls(**values)

    def view(self) -> dict[str, Any]:
        """As `orch task show --json` and ``GET /tasks/{key}`` show it: each review says
        whether it was given on the head read (an approval counts only for its head)."""
        return {
            "number": self.number,
            "url": self.url,
            "state": self.state,
            "head_sha": self.head_sha,
            "merged_sha": self.merged_sha,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "merged_at": self.merged_at,
            "checks": [asdict(c) for c in self.checks],
            "reviews": [
                {**asdict(r), "on_head": r.commit_sha == self.head_sha} for r in self.reviews
            ],
        }


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, for its ON CONFLICT clauses."""
    name = conn.dialect.name
    # Each dialect imported where it is used: PostgreSQL's cost a SQLite command ~15 ms.
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if name != "sqlite":  # pragma: no cover - make_engine only opens the two backends
        msg = f"unsupported database backend {name!r}"
        raise ValueError(msg)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _events(seen: PullSeen) -> Iterable[dict[str, Any]]:
    """The events this reading shows, by what makes each one (see ``pull_events``)."""
    yield {"kind": "opened", "seen": "", "name": ""}
    if seen.state == MERGED:
        yield {"kind": "merged", "seen": "", "name": ""}
    for c in seen.checks:
        if c.state == FAILURE:
            yield {"kind": "check-failed", "seen": seen.head_sha, "name": c.name}
    for r in seen.reviews:
        if r.state == CHANGES_REQUESTED:
            yield {"kind": "changes-requested", "seen": str(r.id), "name": r.author}


def record_pull(conn: sa.Connection, task_id: int, seen: PullSeen, *, now: float) -> PullRow:
    """Store task ``task_id``'s pull request as read at ``now``; the row as it is now.

    One statement each, so two workers reading at once never fail each other on a key:
    the row is an upsert (``opened_at`` kept while the number is the same, ``merged_at``
    and ``merged_sha`` kept once set), each event an insert-if-absent on its unique key.
    """
    t = pull_requests.c
    stmt = _insert(conn, pull_requests).values(
        task_id=task_id,
        number=seen.number,
        url=seen.url,
        head_sha=seen.head_sha,
        state=seen.state,
        checks=[asdict(c) for c in seen.checks],
        reviews=[asdict(r) for r in seen.reviews],
        merged_sha=seen.merged_sha,
        opened_at=now,
        updated_at=now,
        merged_at=now if seen.state == MERGED else None,
    )
    new = stmt.excluded
    same = t.number == new.number
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.task_id],
        set_={
            "number": new.number,
            "url": new.url,
            "head_sha": new.head_sha,
            "state": new.state,
            "checks": new.checks,
            "reviews": new.reviews,
            "merged_sha": sa.case(
                (same, sa.func.coalesce(t.merged_sha, new.merged_sha)), else_=new.merged_sha
            ),
            "opened_at": sa.case((same, t.opened_at), else_=new.opened_at),
            "updated_at": new.updated_at,
            "merged_at": sa.case(
                (same, sa.func.coalesce(t.merged_at, new.merged_at)), else_=new.merged_at
            ),
        },
    )
    row = conn.execute(stmt.returning(*pull_requests.c)).one()
    for event in _events(seen):
        conn.execute(
            _insert(conn, pull_events)
            .values(task_id=task_id, number=seen.number, at=now, **event)
            .on_conflict_do_nothing()
        )
    return PullRow.of(row._mapping)


def get_pull(conn: sa.Connection, task_id: int) -> PullRow | None:
    """Task ``task_id``'s pull request as last read, or None (it has none)."""
    found = conn.execute(sa.select(pull_requests).where(pull_requests.c.task_id == task_id))
    row = found.first()
    return None if row is None else PullRow.of(row._mapping)


def list_pull_events(conn: sa.Connection, task_id: int) -> list[tuple[str, int, str, str]]:
    """Task ``task_id``'s pull-request events, oldest first: (kind, number, seen, name)."""
    e = pull_events.c
    stmt = sa.select(e.kind, e.number, e.seen, e.name).where(e.task_id == task_id).order_by(e.id)
    return [(kind, int(n), seen, name) for kind, n, seen, name in conn.execute(stmt)]
