"""The store: the one part of the orchestrator that touches the database.

SQLAlchemy Core on SQLite (WAL, the default) or PostgreSQL, one schema for both, Alembic
migrations shipped in the package. Reads and writes (``queries``, and beside it
``dependencies``, ``alert_rows`` and the other modules here) take the caller's connection,
so callers decide what one transaction holds; the rows they return are ``rows``::

    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        task = queries.insert_task(conn, repo_id=repo.id, title=..., body=..., stage=..., now=now)
"""

from __future__ import annotations

from orchestrator.store import queries
from orchestrator.store.db import PoolSizes, is_transient, make_engine, normalize_url, reader
from orchestrator.store.migrate import current_revision, head_revision, is_current, upgrade
from orchestrator.store.rows import AlertRow, JobRow, RepoRow, TaskRow, TransitionRow
from orchestrator.store.schema import metadata

__all__ = [
    "AlertRow",
    "JobRow",
    "PoolSizes",
    "RepoRow",
    "TaskRow",
    "TransitionRow",
    "current_revision",
    "head_revision",
    "is_current",
    "is_transient",
    "make_engine",
    "metadata",
    "normalize_url",
    "queries",
    "reader",
    "upgrade",
]
