"""The schema's two dialect-specific parts, JSON columns and the serial gate's partial index,
are what the migrations write on SQLite and PostgreSQL alike, although PostgreSQL's are set
only when asked for (``store.schema.JSON``, ``store.schema.PartialIndex``): importing
PostgreSQL's dialect costs a SQLite command ~15 ms. The live schema on either backend is
``tests/integration/test_schema_snapshot.py``'s; this compares the DDL both would emit.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from orchestrator.store.schema import SERIAL_GATE_WHERE, jobs, metadata

# As the migrations (0001 and on) declare them.
MIGRATIONS_JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def _serial_gate(table: sa.Table) -> sa.Index:
    (index,) = (ix for ix in table.indexes if ix.name == "uq_jobs_running_serial_key")
    return index


def _plain_serial_gate() -> sa.Index:
    """The gate's index as the migrations write it, on a copy of ``jobs``."""
    copy = sa.Table("jobs", sa.MetaData(), sa.Column("serial_key", sa.String()))
    return sa.Index(
        "uq_jobs_running_serial_key",
        copy.c.serial_key,
        unique=True,
        sqlite_where=sa.text(SERIAL_GATE_WHERE),
        postgresql_where=sa.text(SERIAL_GATE_WHERE),
    )


def test_json_columns_are_jsonb_on_postgresql_and_json_on_sqlite() -> None:
    json_columns = [
        c
        for t in metadata.tables.values()
        for c in t.columns
        if isinstance(getattr(c.type, "impl_instance", c.type), sa.JSON)
    ]
    assert len(json_columns) > 10
    for dialect, name in ((postgresql.dialect(), "JSONB"), (sqlite.dialect(), "JSON")):
        assert MIGRATIONS_JSON.compile(dialect=dialect) == name
        for column in json_columns:
            assert column.type.compile(dialect=dialect) == name, (column, dialect.name)
    assert "artifacts JSONB" in str(CreateTable(jobs).compile(dialect=postgresql.dialect()))


def test_json_keeps_none_as_sql_null() -> None:
    # none_as_null: Python None is SQL NULL, not the JSON text 'null'.
    column = jobs.c.artifacts
    assert not column.type.should_evaluate_none
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        bind = column.type.dialect_impl(dialect).bind_processor(dialect)
        assert bind is not None
        assert bind(None) is None, dialect.name
        assert bind({"a": 1}) == '{"a": 1}', dialect.name


def test_the_serial_gate_index_has_its_where_on_both_backends() -> None:
    gate, plain = _serial_gate(jobs), _plain_serial_gate()
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        ours = str(CreateIndex(gate).compile(dialect=dialect))
        assert ours == str(CreateIndex(plain).compile(dialect=dialect)), dialect.name
        assert ours.endswith(f"WHERE {SERIAL_GATE_WHERE}"), dialect.name


def test_a_copy_of_the_table_keeps_both_wheres() -> None:
    # Table.to_metadata (the snapshot test's copies) passes the index's dialect_kwargs on.
    copied = _serial_gate(jobs.to_metadata(sa.MetaData()))
    assert {k: str(v) for k, v in copied.dialect_kwargs.items()} == {
        "sqlite_where": SERIAL_GATE_WHERE,
        "postgresql_where": SERIAL_GATE_WHERE,
    }
