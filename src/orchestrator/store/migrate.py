"""Schema migrations, with Alembic configured in code: no alembic.ini at run time.

The scripts live in ``migrations/`` inside the package, so an installed wheel can upgrade
its own database (``orch db upgrade``). For developers, a new revision script::

    python -m orchestrator.store revision -m "add jobs.foo" [--autogenerate]

``--autogenerate`` diffs ``schema.metadata`` against a scratch SQLite database upgraded to
head; review and complete what it writes (it cannot see CHECK constraints).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from orchestrator.store.db import make_engine, reader

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged scripts, bound to a connection or URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _engine_for(engine_or_url: sa.Engine | str) -> Iterator[sa.Engine]:
    if isinstance(engine_or_url, sa.Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(engine_or_url: sa.Engine | str, revision: str = "head") -> None:
    """Bring the database up to ``revision``, in one transaction; a no-op when already there."""
    with _engine_for(engine_or_url) as engine, engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine_or_url: sa.Engine | str, revision: str) -> None:
    """Take the database down to ``revision`` (``"base"``: no tables), in one transaction."""
    with _engine_for(engine_or_url) as engine, engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with reader(engine).connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    return None if rev is None else str(rev)


def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        msg = f"no migration scripts in {MIGRATIONS_DIR}"
        raise RuntimeError(msg)
    return str(head)


def is_current(engine: sa.Engine) -> bool:
    """True when the database is at the newest shipped revision."""
    return current_revision(engine) == head_revision()


def _new_revision(message: str, *, autogenerate: bool) -> None:
    # Sequential ids (0001, 0002, ...) read better in a linear history than random hex.
    script = ScriptDirectory.from_config(alembic_config())
    rev_id = f"{len(list(script.walk_revisions())) + 1:04d}"
    if not autogenerate:
        command.revision(alembic_config(), message=message, rev_id=rev_id)
        return
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            upgrade(engine)
            with engine.begin() as conn:
                command.revision(
                    alembic_config(conn), message=message, autogenerate=True, rev_id=rev_id
                )
        finally:
            engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Developer entry point: ``revision -m MESSAGE [--autogenerate]``."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.store")
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="write a new migration script")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--autogenerate", action="store_true")
    args = parser.parse_args(argv)
    _new_revision(args.message, autogenerate=args.autogenerate)
    return 0
