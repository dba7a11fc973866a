"""Alembic environment, configured in code by ``orchestrator.store.migrate`` (no alembic.ini).

The caller hands over an open connection in ``config.attributes["connection"]``, usually
inside its own transaction; without one, ``sqlalchemy.url`` is opened with ``make_engine``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from orchestrator.store.db import make_engine
from orchestrator.store.migrations.render import render_item
from orchestrator.store.schema import metadata

# Any constant works; all that matters is that every migrator of one PostgreSQL database
# uses the same one.
_PG_MIGRATION_LOCK = 7_406_020_001


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
    )


def _run(connection: sa.Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes upgrading at once would both try CREATE TABLE. On SQLite the
            # BEGIN IMMEDIATE of this transaction already serializes them.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or through a fresh engine on the URL."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        msg = "alembic needs a connection in config.attributes or sqlalchemy.url"
        raise RuntimeError(msg)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    """Render the migration SQL for ``sqlalchemy.url``'s dialect without connecting."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
