"""The suite's PostgreSQL copies (``tests/conftest.py``, ``_PgPool``) are given again only as
the template made them: a test cannot leave the next one a row, a sequence moved on, a
changed schema or a connection that still writes.

PostgreSQL only (on SQLite every test copies the template's file afresh).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.skipif(
    not os.environ.get("ORCH_TEST_DATABASE_URL"),
    reason="the pool of database copies is PostgreSQL's; SQLite copies a file per test",
)


@pytest.fixture
def pool(_db_pool: Any) -> Any:
    assert _db_pool is not None, "the session's template holds rows: nothing is pooled"
    return _db_pool


def _engine(pool: Any, name: str) -> sa.Engine:
    return sa.create_engine(pool.base.set(database=name), poolclass=sa.NullPool)


def _exists(pool: Any, name: str) -> bool:
    with pool.admin.connect() as conn:
        found = conn.execute(
            sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
        )
        return bool(found.scalar())


def test_a_copy_comes_back_empty_with_its_sequences_at_their_start(pool: Any) -> None:
    name = pool.take()
    engine = _engine(pool, name)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO webhook_deliveries (id, event, received_at) VALUES ('d1', 'push', 0)"
        )
        sequences = [r[0] for r in conn.exec_driver_sql("SELECT sequencename FROM pg_sequences")]
        assert sequences, "the schema has sequences to move on"
        for seq in sequences:
            conn.exec_driver_sql(f"SELECT nextval('{seq}')")
    engine.dispose()
    free = len(pool.free)
    pool.give_back(name)
    assert len(pool.free) == free + 1  # kept, not dropped: the reset is what is checked
    returned = pool.free[-1]
    assert returned != name  # renamed
    again = pool.take()  # the copy just given back: the last one in
    assert again == returned
    engine = _engine(pool, again)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM webhook_deliveries").scalar()
            moved = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_sequences WHERE last_value IS NOT NULL"
            ).scalar()
    finally:
        engine.dispose()
        pool.give_back(again)
    assert (rows, moved) == (0, 0)


def test_a_copy_whose_schema_changed_is_dropped(pool: Any) -> None:
    name = pool.take()
    engine = _engine(pool, name)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE repos ADD COLUMN planted text")
    engine.dispose()
    free = list(pool.free)
    pool.give_back(name)
    assert pool.free == free  # nothing new to give
    assert not _exists(pool, name)


def test_a_connection_left_open_is_ended_and_cannot_come_back(pool: Any) -> None:
    name = pool.take()
    engine = sa.create_engine(pool.base.set(database=name))  # pooled: one stays open
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    left_open = engine.raw_connection()
    pool.give_back(name)
    with pytest.raises(Exception, match=r"terminat|closed|connection"):
        left_open.cursor().execute("SELECT 1")
    left_open.invalidate()
    # A process of the last test that tries again by the name it knew finds no database.
    with pytest.raises(sa.exc.OperationalError, match="does not exist"):
        _engine(pool, name).connect()
    engine.dispose()


def test_the_pool_drops_a_copy_it_cannot_read(pool: Any) -> None:
    # A test that removed its database itself (the fault matrix's "gone" database, say).
    name = pool.take()
    with pool.admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" RENAME TO "gone_{uuid.uuid4().hex[:8]}"')
    free = list(pool.free)
    pool.give_back(name)  # no error: nothing to give back
    assert pool.free == free
    with pool.admin.connect() as conn:
        for (gone,) in conn.exec_driver_sql(
            "SELECT datname FROM pg_database WHERE datname ~ '^gone_'"
        ):
            conn.exec_driver_sql(f'DROP DATABASE "{gone}" WITH (FORCE)')
