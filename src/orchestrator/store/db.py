"""Engines, with every dialect quirk in this one module.

SQLite: WAL journal, ``busy_timeout``, foreign keys on, ``synchronous=NORMAL``, and each
transaction opened with ``BEGIN IMMEDIATE``. PostgreSQL: ``postgresql://`` means psycopg 3,
a connection that sat idle in the pool is pinged before use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from orchestrator.private_files import create_private

DEFAULT_BUSY_TIMEOUT_MS = 30_000
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_POOL_TIMEOUT_S = 30.0

_PG_DRIVERLESS = {"postgresql", "postgres"}

# A pooled PostgreSQL connection idle this long is pinged before it is used again; one
# back in the pool for less is used as it is (see _ping_when_idle).
PING_IDLE_S = 1.0
_IDLE_SINCE = "orch_idle_since"

# Execution option read by the SQLite "begin" hook below; see ``reader``.
_DEFERRED_BEGIN = "orch_deferred_begin"


def normalize_url(url: str | sa.URL) -> sa.URL:
    """The URL SQLAlchemy should open: plain ``postgresql://`` gets the psycopg 3 driver."""
    parsed = sa.make_url(url)
    if parsed.drivername in _PG_DRIVERLESS:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


@dataclass(frozen=True)
class PoolSizes:
    """How many connections an engine keeps, may add at peaks, and waits for one."""

    size: int = DEFAULT_POOL_SIZE
    max_overflow: int = DEFAULT_MAX_OVERFLOW
    timeout_s: float = DEFAULT_POOL_TIMEOUT_S


def make_engine(
    url: str | sa.URL,
    *,
    pool: PoolSizes | None = None,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    echo: bool = False,
) -> sa.Engine:
    """An engine for ``url``; the busy timeout applies to SQLite, the pool to a file or server."""
    pool = pool or PoolSizes()
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() != "pysqlite":
            msg = f"unsupported SQLite driver {parsed.drivername!r} (use sqlite://)"
            raise ValueError(msg)
        return _sqlite_engine(parsed, pool=pool, busy_timeout_ms=busy_timeout_ms, echo=echo)
    if backend == "postgresql":
        engine = sa.create_engine(
            parsed,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout_s,
            echo=echo,
        )
        _ping_when_idle(engine)
        return engine
    msg = f"unsupported database backend {backend!r} (use sqlite or postgresql)"
    raise ValueError(msg)


def _ping_when_idle(engine: sa.Engine) -> None:
    """Ping a pooled connection before use only when it sat idle ``PING_IDLE_S`` or more.

    ``pool_pre_ping`` pings on every checkout: a round trip more for each of the several
    transactions a job's end makes back to back. A connection used a moment ago is as
    good as a ping; one idle for a while may have been dropped (a restart, an idle
    timeout), and a failed ping makes the pool replace it before anyone sees it. What a
    ping cannot catch (the server went away within the last second) fails as a transient
    error (``is_transient``): the worker tries again, and SQLAlchemy renews the whole pool
    on the first disconnect it sees.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool's own answer to a dead connection: drop it and connect anew.
            msg = f"pooled connection failed its ping: {type(exc).__name__}"
            raise sa.exc.DisconnectionError(msg) from exc


# SQLSTATE class 54, "program limit exceeded": the same value is refused every time.
_PROGRAM_LIMIT_EXCEEDED = "54"


def is_transient(exc: BaseException) -> bool:
    """Whether a database error means "unreachable or busy for now", not a bug of ours.

    A dropped or refused connection, a lock wait that ran out (SQLite "database is locked"),
    a deadlock or serialization failure, an exhausted pool: each may succeed when tried
    again. A constraint violation or a programming error will not, nor a value past one of
    PostgreSQL's limits (an index row, a JSONB value: SQLSTATE class 54), which psycopg
    makes an OperationalError as it does a dropped connection: taken for an outage, a job's
    end holding one was tried again for ever.
    """
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PROGRAM_LIMIT_EXCEEDED):
        return False
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


def reader(engine: sa.Engine) -> sa.Engine:
    """The same engine, but SQLite transactions begin DEFERRED: for reads only.

    Under WAL a deferred reader never waits for a writer, while an IMMEDIATE one queues
    behind it. A write inside such a transaction may fail with "database is locked" instead
    of waiting, so use it for status pages and listings, not for read-then-write.
    """
    return engine.execution_options(**{_DEFERRED_BEGIN: True})


def _sqlite_engine(url: sa.URL, *, pool: PoolSizes, busy_timeout_ms: int, echo: bool) -> sa.Engine:
    database = url.database or ""
    in_memory = database in {"", ":memory:"} or database.startswith("file::memory:")
    if in_memory:
        # One connection per thread (SingletonThreadPool): pool sizes do not apply.
        engine = sa.create_engine(url, echo=echo)
    else:
        if database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            # SQLite would make it 0644 less the umask, and its -wal and -shm files take
            # the database's mode: made here first, the user's alone.
            create_private(Path(database).expanduser())
        engine = sa.create_engine(
            url,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout_s,
            echo=echo,
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite opens transactions lazily with a plain BEGIN (DEFERRED) and only before
        # DML. Hand transaction control to SQLAlchemy: see _on_begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            # busy_timeout first: switching to WAL below needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A DEFERRED transaction that reads and then writes must upgrade its SHARED lock;
        # when another process writes meanwhile SQLite fails at once with "database is
        # locked" (busy_timeout cannot help: waiting could deadlock). IMMEDIATE takes the
        # write lock up front, so concurrent writers queue on busy_timeout instead, and
        # read-then-write sequences (task key allocation) are serialized across processes.
        if conn.get_execution_options().get(_DEFERRED_BEGIN):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
