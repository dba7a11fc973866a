"""The schema cannot change without a migration.

Three checks, on whichever backend the suite runs (SQLite, or ORCH_TEST_DATABASE_URL):

1. Alembic's ``compare_metadata`` between ``schema.metadata`` and a freshly migrated
   database finds nothing (columns, types, nullability, server defaults, indexes, uniques,
   foreign keys).
2. The migrated database matches ``schema_snapshot.json``, a reviewed, committed
   description of the schema (tables, columns, types, nullability, defaults, keys, indexes
   with their WHERE, CHECK constraints), written in a backend-neutral form.
3. ``metadata.create_all`` produces that same snapshot. This catches what Alembic's
   comparison cannot see: CHECK constraints and partial-index WHERE clauses.

After a deliberate schema change plus its migration, regenerate the snapshot with::

    python -m tests.integration.test_schema_snapshot --write
    # or: ORCH_WRITE_SCHEMA_SNAPSHOT=1 pytest tests/integration/test_schema_snapshot.py
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orchestrator.store import head_revision, make_engine, metadata, upgrade

SNAPSHOT = Path(__file__).with_name("schema_snapshot.json")
WRITE_ENV = "ORCH_WRITE_SCHEMA_SNAPSHOT"

# ---- a backend-neutral description of a live schema --------------------------------------

# PostgreSQL casts in reflected SQL: 'x'::character varying, (state)::text, ...::text[]
_CAST = re.compile(r"::(?:character varying|double precision|[a-z_]+)(?:\[\])?")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
# state IN ('a', 'b')                                        (SQLite keeps the text as written)
_IN_LIST = re.compile(r"^\(*\s*(\w+)\s+IN\s*\((.*)\)\s*\)*$", re.S | re.I)
# state::text = ANY (ARRAY['a'::character varying, ...]::text[])    (PostgreSQL's rewrite)
_ANY_ARRAY = re.compile(r"^\(*\s*(\w+)\)?\s*=\s*ANY\s*\(\s*\(*ARRAY\[(.*)\]\)*\s*\)\s*\)*$", re.S)


def _normalize_sql(text: str) -> str:
    """Reflected SQL with casts, parentheses and spacing removed; literals kept as written."""
    bare = _CAST.sub("", str(text)).replace("(", " ").replace(")", " ")
    return " ".join(bare.split())


def _normalize_check(text: str) -> str:
    """A CHECK as ``col IN ('a', 'b')`` on either backend; other checks as normalized SQL."""
    uncast = _CAST.sub("", str(text)).strip()
    match = _IN_LIST.match(uncast) or _ANY_ARRAY.match(uncast)
    if match is None:
        return _normalize_sql(text)
    column, listed = match.groups()
    values = ", ".join(f"'{v}'" for v in _LITERAL.findall(listed))
    return f"{column} IN ({values})"


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    generic = type_.as_generic()
    if isinstance(generic, sa.Float):
        return "Float"  # FLOAT on SQLite, DOUBLE PRECISION on PostgreSQL: both 8-byte
    name = type(generic).__name__
    length = getattr(generic, "length", None)
    return f"{name}({length})" if length else name


def _default(column: dict[str, Any]) -> str | None:
    default = column.get("default")
    if default is None or str(default).startswith("nextval("):
        return None  # an autoincrement key's sequence on PostgreSQL
    text = _normalize_sql(default)
    if isinstance(column["type"].as_generic(), sa.Boolean):
        return {"0": "false", "1": "true"}.get(text, text.lower())
    return text


def _where(options: dict[str, Any]) -> str | None:
    where = options.get("sqlite_where", options.get("postgresql_where"))
    return None if where is None else _normalize_sql(where)


def snapshot(bind: sa.Engine | sa.Connection, schema: str | None = None) -> dict[str, Any]:
    """Tables, columns, keys, indexes and checks of a live database, backend-neutral."""
    insp = sa.inspect(bind)
    tables: dict[str, Any] = {}
    for table in sorted(insp.get_table_names(schema=schema)):
        if table == "alembic_version":
            continue
        pk = insp.get_pk_constraint(table, schema=schema)
        uniques = insp.get_unique_constraints(table, schema=schema)
        unique_names = {u["name"] for u in uniques}
        tables[table] = {
            "columns": {
                c["name"]: {
                    "type": _type_name(c["type"]),
                    "nullable": bool(c["nullable"]),
                    "default": _default(dict(c)),
                }
                for c in insp.get_columns(table, schema=schema)
            },
            "primary_key": {"name": pk["name"], "columns": pk["constrained_columns"]},
            "foreign_keys": sorted(
                (
                    {
                        "name": fk["name"],
                        "columns": fk["constrained_columns"],
                        "references": f"{fk['referred_table']}"
                        f"({', '.join(fk['referred_columns'])})",
                        "ondelete": (fk.get("options") or {}).get("ondelete"),
                    }
                    for fk in insp.get_foreign_keys(table, schema=schema)
                ),
                key=lambda fk: str(fk["name"]),
            ),
            "unique_constraints": sorted(
                ({"name": u["name"], "columns": u["column_names"]} for u in uniques),
                key=lambda u: str(u["name"]),
            ),
            "indexes": sorted(
                (
                    {
                        "name": ix["name"],
                        "columns": ix["column_names"],
                        "unique": bool(ix["unique"]),
                        "where": _where(dict(ix.get("dialect_options", {}))),
                    }
                    for ix in insp.get_indexes(table, schema=schema)
                    # PostgreSQL lists each UNIQUE constraint's index as well.
                    if ix["name"] not in unique_names
                ),
                key=lambda ix: str(ix["name"]),
            ),
            "check_constraints": {
                ck["name"]: _normalize_check(ck["sqltext"])
                for ck in sorted(
                    insp.get_check_constraints(table, schema=schema), key=lambda c: str(c["name"])
                )
            },
        }
    return {"alembic_head": head_revision(), "tables": tables}


def _render(snap: dict[str, Any]) -> str:
    return json.dumps(snap, indent=2, sort_keys=True) + "\n"


def write_snapshot() -> Path:
    """Regenerate schema_snapshot.json from a scratch SQLite database migrated to head."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'snapshot.db'}")
        try:
            upgrade(engine)
            SNAPSHOT.write_text(_render(snapshot(engine)), encoding="utf-8")
        finally:
            engine.dispose()
    return SNAPSHOT


@contextmanager
def created_from_metadata(
    engine: sa.Engine, tmp_path: Path, meta: sa.MetaData
) -> Iterator[tuple[sa.Engine, str | None]]:
    """``meta.create_all`` beside the migrated database: a second file, or a PG schema."""
    if engine.dialect.name == "sqlite":
        other = make_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
        try:
            meta.create_all(other)
            yield other, None
        finally:
            other.dispose()
        return
    schema = f"create_all_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    with engine.execution_options(schema_translate_map={None: schema}).begin() as conn:
        meta.create_all(conn)
    yield engine, schema


def _copy(meta: sa.MetaData) -> sa.MetaData:
    clone = sa.MetaData(naming_convention=meta.naming_convention)
    for table in meta.tables.values():
        table.to_metadata(clone)
    return clone


def _diffs(engine: sa.Engine, meta: sa.MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, meta))


# ---- the checks --------------------------------------------------------------------------


def test_migrations_match_metadata(engine: sa.Engine) -> None:
    # No filtering of "SQLite noise": on both backends the comparison is clean today, and
    # any difference it reports is one to fix, not to hide.
    assert _diffs(engine, metadata) == []


def test_migrated_schema_matches_snapshot(engine: sa.Engine) -> None:
    live = snapshot(engine)
    if os.environ.get(WRITE_ENV):
        SNAPSHOT.write_text(_render(live), encoding="utf-8")
        pytest.skip(f"wrote {SNAPSHOT}")
    committed = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert live == committed, (
        "the migrated schema differs from schema_snapshot.json: add a migration, then "
        "regenerate with `python -m tests.integration.test_schema_snapshot --write`"
    )


def test_metadata_creates_the_snapshot_schema(engine: sa.Engine, tmp_path: Path) -> None:
    migrated = snapshot(engine)
    with created_from_metadata(engine, tmp_path, metadata) as (bind, schema):
        assert snapshot(bind, schema) == migrated


# ---- the checks can fail -----------------------------------------------------------------


def test_compare_reports_a_column_added_without_migration(engine: sa.Engine) -> None:
    changed = _copy(metadata)
    changed.tables["tasks"].append_column(sa.Column("priority", sa.Integer(), nullable=True))
    diffs = _diffs(engine, changed)
    assert [(d[0], d[2], d[3].name) for d in diffs] == [("add_column", "tasks", "priority")]


def test_compare_reports_a_changed_type_and_nullability(engine: sa.Engine) -> None:
    changed = _copy(metadata)
    jobs = changed.tables["jobs"]
    jobs.c.exit_code.type = sa.String()
    jobs.c.host.nullable = False
    kinds = sorted(op[0] for d in _diffs(engine, changed) for op in d)
    assert kinds == ["modify_nullable", "modify_type"]


def test_snapshot_sees_a_check_and_a_where_changed_without_migration(
    engine: sa.Engine, tmp_path: Path
) -> None:
    changed = _copy(metadata)
    tasks, jobs = changed.tables["tasks"], changed.tables["jobs"]
    for ck in list(tasks.constraints):
        if isinstance(ck, sa.CheckConstraint):
            tasks.constraints.remove(ck)
    tasks.append_constraint(sa.CheckConstraint("state IN ('active', 'done')", name="state"))
    for ix in list(jobs.indexes):
        if ix.name == "uq_jobs_running_serial_key":
            jobs.indexes.remove(ix)
    where = sa.text("state = 'queued' AND serial_key IS NOT NULL")
    sa.Index(
        "uq_jobs_running_serial_key",
        jobs.c.serial_key,
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    assert _diffs(engine, changed) == []  # Alembic is blind to both...
    migrated = snapshot(engine)
    with created_from_metadata(engine, tmp_path, changed) as (bind, schema):
        drifted = snapshot(bind, schema)
    # ... the snapshot is not.
    assert drifted != migrated
    assert drifted["tables"]["tasks"]["check_constraints"]["ck_tasks_state"] == (
        "state IN ('active', 'done')"
    )
    (gate,) = (
        ix
        for ix in drifted["tables"]["jobs"]["indexes"]
        if ix["name"] == "uq_jobs_running_serial_key"
    )
    assert gate["where"] == "state = 'queued' AND serial_key IS NOT NULL"


def test_snapshot_normalizes_postgres_reflection() -> None:
    pg_check = (
        "state::text = ANY (ARRAY['queued'::character varying, "
        "'running'::character varying]::text[])"
    )
    assert _normalize_check(pg_check) == "state IN ('queued', 'running')"
    assert _normalize_check("state IN ('queued', 'running')") == "state IN ('queued', 'running')"
    pg_where = "(((state)::text = 'running'::text) AND (serial_key IS NOT NULL))"
    assert _normalize_sql(pg_where) == "state = 'running' AND serial_key IS NOT NULL"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.integration.test_schema_snapshot --write")
    print(f"wrote {write_snapshot()}")
