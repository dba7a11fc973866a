"""Fixtures shared by the whole suite.

Database (one suite, either backend):

- ``db_url``: a fresh, empty database for the test. SQLite by default: a file in a temp
  directory of its own (not ``tmp_path``). When ``ORCH_TEST_DATABASE_URL`` is set (for example
  ``postgresql://postgres@127.0.0.1:5432/test``, as CI does), a uniquely named PostgreSQL
  database is created on that server for the test (``CREATE DATABASE`` through an AUTOCOMMIT
  connection to the URL's own database) and dropped ``WITH (FORCE)`` afterwards.
- ``migrated_db_url``: a fresh database already at the newest migration, copied from a
  template the session migrates once (Alembic per test cost ~64 ms): SQLite copies the
  template's file (closed, WAL checkpointed); PostgreSQL runs ``CREATE DATABASE ... TEMPLATE
  orch_tmpl_<hash>_<session>``, the hash taken over the migration scripts, the template
  dropped at the session's end. Tests of the migrations themselves take ``db_url`` and run
  Alembic for real.

  On PostgreSQL a copy is made once and then taken again by later tests (``_PgPool``): a
  ``CREATE DATABASE`` and its ``DROP`` cost 0.2-0.3 s a test on a 2-core machine, putting a
  used copy back ~30 ms. A copy goes back only when it is found as the template made it:
  its connections ended, renamed (a process left over from its test cannot connect to it
  again by the name it knew), the same shape (tables, columns, constraints, indexes,
  functions, triggers, types, schemas, the Alembic revision; no large object, setting or
  prepared transaction), then every row deleted and every sequence restarted. Anything
  else, or any error on the way, and it is dropped as before.
- ``module_migrated_db_url``: as ``migrated_db_url``, one for all the tests of a module that
  take it: for a server started once for several tests whose requests change nothing.
- ``migrated_sqlite_at(path)``: a SQLite database at the newest migration, copied from a
  template to a path the test names (SQLite even when the other tests run on PostgreSQL).
- ``engine``: an engine on ``migrated_db_url``. A test that needs the URL of the engine's
  database too takes ``migrated_db_url`` beside it (``db_url`` would be another, empty one).

Git:

- ``make_repo(path=None, files=None, *, branch="main", message="initial commit")``: a real
  git repository with ``files`` (relative path -> text or bytes) committed once on
  ``branch``, with a local user.name / user.email so later commits work too. ``path``
  defaults to a fresh directory under the test's ``tmp_path``. Returns the repo's Path.
- ``module_make_repo``: the same factory for a module's shared fixtures, its repos under a
  directory of the module's.
"""

from __future__ import annotations

import graphlib
import hashlib
import itertools
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store import make_engine, normalize_url, upgrade
from orchestrator.store.migrate import MIGRATIONS_DIR

TEST_DATABASE_ENV = "ORCH_TEST_DATABASE_URL"

# The fake agents and test programs live in this folder: every sandbox of the suite may read
# it, wherever the checkout is (under /tmp or a home folder, both hidden in a sandbox).
# Subprocesses inherit it; tests that build an environment without ORCH_* keep this one.
SANDBOX_RO_ENV = "ORCH_SANDBOX_RO"
TESTS_DIR = Path(__file__).resolve().parent
os.environ[SANDBOX_RO_ENV] = str(TESTS_DIR)

MakeRepo = Callable[..., Path]


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], None]]:
    """``set_umask(mask)`` sets the process's umask for this test; the old one comes back
    after it. A test of the modes files are made with means something under any umask."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _server_url() -> sa.URL | None:
    server_url = os.environ.get(TEST_DATABASE_ENV, "").strip()
    return normalize_url(server_url) if server_url else None


def _admin(base: sa.URL) -> sa.Engine:
    # CREATE / DROP DATABASE cannot run inside a transaction: AUTOCOMMIT, on the URL's own DB.
    return sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def migrations_digest() -> str:
    """A hash of the migration scripts: a changed or added migration names a new template."""
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS_DIR.rglob("*.py")):
        digest.update(path.relative_to(MIGRATIONS_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def make_sqlite_template(path: Path) -> Path:
    """Migrate a new SQLite file at ``path`` to head and leave it closed and whole."""
    eng = make_engine(f"sqlite:///{path}")
    try:
        upgrade(eng)
    finally:
        eng.dispose()
    # Everything into the main file and the -wal emptied (outside a transaction, which the
    # engine's connections always open): a copy of the main file alone is the whole database.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


@pytest.fixture(scope="session")
def _db_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The migrated template of the session: a SQLite file path or a PostgreSQL DB name."""
    base = _server_url()
    if base is None:
        yield str(make_sqlite_template(tmp_path_factory.mktemp("db-template") / "template.db"))
        return
    # The session's own template: two sessions on one server (CI's, a developer's) must not
    # drop or connect to each other's while one copies it.
    name = f"orch_tmpl_{migrations_digest()}_{uuid.uuid4().hex[:8]}"
    admin = _admin(base)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        eng = make_engine(base.set(database=name))
        try:
            upgrade(eng)
        finally:
            # CREATE DATABASE ... TEMPLATE refuses a source with any connection open.
            eng.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        yield name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A migrated SQLite file, whatever database the session's other tests use (on SQLite:
    the session's template)."""
    if _server_url() is None:
        return Path(request.getfixturevalue("_db_template"))
    return make_sqlite_template(tmp_path_factory.mktemp("sqlite-template") / "template.db")


@pytest.fixture
def migrated_sqlite_at(_sqlite_template: Path) -> Callable[[Path], str]:
    """``at(path)``: a SQLite database at the newest migration, copied to ``path`` (for a
    test whose database must be a file at a path of its own, such as the sandbox tests'
    ``<ORCH_HOME>/orchestrator.db``); its URL."""

    def at(path: Path) -> str:
        shutil.copyfile(_sqlite_template, path)
        return f"sqlite:///{path}"

    return at


def _fresh_db(
    tmp_path_factory: pytest.TempPathFactory, template: str | None, pool: _PgPool | None = None
) -> Iterator[str]:
    base = _server_url()
    if base is None:
        # Its own directory, not tmp_path: a test may turn tmp_path into a git repo or a
        # state home, and the database file (and its -wal, -shm) must not land in either.
        path = tmp_path_factory.mktemp("db") / "orchestrator.db"
        if template is not None:
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    if pool is not None and template is not None:
        name = pool.take()
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            pool.give_back(name)
        return
    name = f"orch_test_{uuid.uuid4().hex[:16]}"
    admin = _admin(base)
    try:
        with admin.connect() as conn:
            source = f' TEMPLATE "{template}"' if template is not None else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{source}')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# What a database holds besides its rows, one row per thing, in one order: a copy whose
# answer differs from the template's is not given to another test. (Regular expressions,
# not LIKE: psycopg reads a % in a statement as a placeholder.)
_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
)
_SHAPE_SQL = f"""
SELECT 'schema', n.nspname, '', '' FROM pg_namespace n WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'relation', n.nspname, c.relname, c.relkind::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'column', c.relname, a.attname,
       format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped AND {_USER_SCHEMA}
UNION ALL
SELECT 'constraint', c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'index', schemaname, indexname, indexdef FROM pg_indexes
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'function', n.nspname, p.proname, md5(pg_get_functiondef(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'trigger', tgrelid::regclass::text, tgname, '' FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'type', n.nspname, t.typname, t.typtype::text
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'large objects', count(*)::text, '', '' FROM pg_largeobject_metadata
UNION ALL
SELECT 'settings', count(*)::text, '', '' FROM pg_db_role_setting
 WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'prepared', count(*)::text, '', '' FROM pg_prepared_xacts
 WHERE database = current_database()
UNION ALL
SELECT 'revision', version_num, '', '' FROM alembic_version
ORDER BY 1, 2, 3, 4
"""


class _PgPool:
    """Copies of the session's PostgreSQL template, each given to one test at a time and
    put back only as the template made it (see the module's docstring)."""

    def __init__(self, base: sa.URL, template: str, shape: list[tuple[str, ...]]) -> None:
        self.base = base
        self.template = template
        self.shape = shape
        self.free: list[str] = []
        self.made: set[str] = set()
        self.admin = _admin(base)
        # Rows go children first, so every foreign key holds at each step.
        self.tables: list[str] = []

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = f"orch_test_{uuid.uuid4().hex[:16]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.made.add(name)
        return name

    def give_back(self, name: str) -> None:
        self.made.discard(name)
        renamed = f"orch_test_{uuid.uuid4().hex[:16]}"
        try:
            with self.admin.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"')
        except sa.exc.SQLAlchemyError:
            renamed = name  # gone, or in use again: dropped below
        else:
            try:
                if self._reset(renamed):
                    self.made.add(renamed)
                    self.free.append(renamed)
                    return
            except sa.exc.SQLAlchemyError:
                pass
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{renamed}" WITH (FORCE)')

    def _reset(self, name: str) -> bool:
        """Whether the copy ``name`` is as the template made it, its rows now deleted and its
        sequences back at their start."""
        engine = sa.create_engine(self.base.set(database=name), poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                if [tuple(r) for r in conn.exec_driver_sql(_SHAPE_SQL)] != self.shape:
                    return False
                for table in self.tables:
                    conn.exec_driver_sql(f"DELETE FROM {table}")
                conn.execute(
                    sa.text(
                        "SELECT setval(format('%I.%I', schemaname, sequencename),"
                        " start_value, false) FROM pg_sequences"
                    )
                )
        finally:
            engine.dispose()
        return True

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in [*self.free, *self.made]:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


def _children_first(conn: sa.Connection) -> list[str] | None:
    """The template's tables other than Alembic's, each after every table that refers to
    it; None when one holds a row (the template would not be empty tables alone)."""
    tables = [
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            " AND tablename <> 'alembic_version'"
        )
    ]
    order = graphlib.TopologicalSorter({t: set() for t in tables})
    for child, parent in conn.exec_driver_sql(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid <> confrelid"
    ):
        order.add(parent, child)
    ordered = [t for t in order.static_order() if t in tables]
    if any(conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {t})").scalar() for t in tables):
        return None
    return ordered


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh empty database: SQLite in a temp dir, or PostgreSQL per ORCH_TEST_DATABASE_URL."""
    yield from _fresh_db(tmp_path_factory, None)


@pytest.fixture(scope="session")
def _db_pool(_db_template: str) -> Iterator[_PgPool | None]:
    """The session's copies of its PostgreSQL template (None on SQLite, or when the template
    holds rows: deleting every row would then not give it back)."""
    base = _server_url()
    if base is None:
        yield None
        return
    # A first copy, read as the template made it: its shape and the order of its tables.
    pool = _PgPool(base, _db_template, [])
    name = pool.take()
    engine = sa.create_engine(base.set(database=name), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            pool.shape = [tuple(r) for r in conn.exec_driver_sql(_SHAPE_SQL)]
            tables = _children_first(conn)
    finally:
        engine.dispose()
    try:
        if tables is None:
            yield None
            return
        pool.tables = tables
        pool.free.append(name)
        yield pool
    finally:
        pool.close()


@pytest.fixture
def migrated_db_url(
    tmp_path_factory: pytest.TempPathFactory, _db_template: str, _db_pool: _PgPool | None
) -> Iterator[str]:
    """A fresh database at the newest migration, copied from the session's template."""
    yield from _fresh_db(tmp_path_factory, _db_template, _db_pool)


@pytest.fixture(scope="module")
def module_migrated_db_url(
    tmp_path_factory: pytest.TempPathFactory, _db_template: str, _db_pool: _PgPool | None
) -> Iterator[str]:
    """A fresh database at the newest migration, for the tests of one module to share."""
    yield from _fresh_db(tmp_path_factory, _db_template, _db_pool)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[sa.Engine]:
    """An engine on ``migrated_db_url``: a fresh database at the newest migration."""
    eng = make_engine(migrated_db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _git(cwd: Path, *args: str) -> None:
    # Drop GIT_DIR, GIT_INDEX_FILE and friends: run from a git hook, they would point these
    # commands at the outer repository instead of the one being made.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


# A local user.name / user.email so later commits work too; never a signing prompt.
_REPO_CONFIG = (
    "[user]\n\tname = Orchestrator Tests\n\temail = tests@orchestrator.invalid\n"
    "[commit]\n\tgpgsign = false\n"
)


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """A factory of real git repositories with one commit; see the module docstring."""
    return _repo_maker(tmp_path)


@pytest.fixture(scope="module")
def module_make_repo(tmp_path_factory: pytest.TempPathFactory) -> MakeRepo:
    """``make_repo`` for a module's shared fixtures."""
    return _repo_maker(tmp_path_factory.mktemp("repos"))


def _repo_maker(base: Path) -> MakeRepo:
    counter = itertools.count(1)

    def _make(
        path: Path | None = None,
        files: Mapping[str, str | bytes] | None = None,
        *,
        branch: str = "main",
        message: str = "initial commit",
    ) -> Path:
        repo = path if path is not None else base / f"repo{next(counter)}"
        repo.mkdir(parents=True, exist_ok=True)
        # --template= : no sample hooks copied in. The local config is written, not set
        # with three more git processes (a few hundred repos per suite).
        _git(repo, "init", "-q", "--template=", "-b", branch)
        config = repo / ".git" / "config"
        if _REPO_CONFIG not in config.read_text(encoding="utf-8"):  # a repo made again
            with config.open("a", encoding="utf-8") as out:
                out.write(_REPO_CONFIG)
        for rel, content in (files if files is not None else {"README.md": "# demo\n"}).items():
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        return repo

    return _make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that would get two databases where it means one.

    ``engine`` sits on ``migrated_db_url``; a test that also takes ``db_url`` (directly or
    through a fixture) gets a second, empty database, which is never what it means.
    """
    del config
    both = [
        item.nodeid
        for item in items
        if {"db_url", "migrated_db_url"} <= set(getattr(item, "fixturenames", ()))
    ]
    if both:
        listed = "\n  ".join(both)
        msg = f"these tests take both db_url and migrated_db_url (or engine):\n  {listed}"
        raise pytest.UsageError(msg)
