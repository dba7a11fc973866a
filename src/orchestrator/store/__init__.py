"""The store: the one part of the orchestrator that touches the database.

SQLAlchemy Core on SQLite (WAL, the default) or PostgreSQL, one schema for both, Alembic
migrations shipped in the package. Reads and writes (``queries``, and beside it
``dependencies``, ``alert_rows`` and the other modules here) take the caller's connection,
so callers decide what one transaction holds; the rows they return are ``rows``::

    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        task = queries.insert_task(conn, repo_id=repo.id, title=..., body=..., stage=..., now=now)

The names below are loaded on first use: ``import orchestrator.store.rows`` (or any other
module of the package) must not pay for SQLAlchemy's engine and Alembic, which a command
line that only reads a few rows never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.store import queries
    from orchestrator.store.db import PoolSizes, is_transient, make_engine, normalize_url, reader
    from orchestrator.store.migrate import current_revision, head_revision, is_current, upgrade
    from orchestrator.store.rows import AlertRow, JobRow, RepoRow, TaskRow, TransitionRow
    from orchestrator.store.schema import metadata

# Public name -> the module of this package that defines it (a module names itself).
_WHERE = {
    "AlertRow": "rows",
    "JobRow": "rows",
    "PoolSizes": "db",
    "RepoRow": "rows",
    "TaskRow": "rows",
    "TransitionRow": "rows",
    "current_revision": "migrate",
    "head_revision": "migrate",
    "is_current": "migrate",
    "is_transient": "db",
    "make_engine": "db",
    "metadata": "schema",
    "normalize_url": "db",
    "queries": "queries",
    "reader": "db",
    "upgrade": "migrate",
}

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


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    where = _WHERE.get(name)
    if where is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    module = importlib.import_module(f"{__name__}.{where}")
    value = module if where == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
