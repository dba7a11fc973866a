"""Schema migrations, with Alembic configured in code: no alembic.ini at run time.

The scripts live in ``migrations/`` inside the package, so an installed wheel can upgrade
its own database (``orch db upgrade``). For developers, a new revision script::

    python -m orchestrator.store revision -m "add jobs.foo" [--autogenerate]

``--autogenerate`` diffs ``schema.metadata`` against a scratch SQLite database upgraded to
head; review and complete what it writes (it cannot see CHECK constraints).

Alembic (with Mako and more through it) takes longer to import than most commands take to
run, so it is imported only to migrate: ``ensure_current`` reads ``alembic_version`` with a
plain query and compares it with the newest script's revision, read from the scripts' text.
"""

from __future__ import annotations

import argparse
import functools
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from orchestrator.store.db import make_engine, reader

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; env.py keeps it

# ``revision: str = "0009"`` and ``down_revision: str | None = "0008"`` (or ``= None``), as
# the script template writes them. Anything else (a merge's tuple) does not match.
_REVISION_RE = re.compile(r"""^revision(?:\s*:[^=\n]*)?\s*=\s*["']([^"'\n]+)["']\s*$""", re.M)
_DOWN_RE = re.compile(
    r"""^down_revision(?:\s*:[^=\n]*)?\s*=\s*(?:None|["']([^"'\n]+)["'])\s*$""", re.M
)


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged scripts, bound to a connection or URL."""
    from alembic.config import Config

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
    from alembic import command

    with _engine_for(engine_or_url) as engine, engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine_or_url: sa.Engine | str, revision: str) -> None:
    """Take the database down to ``revision`` (``"base"``: no tables), in one transaction."""
    from alembic import command

    with _engine_for(engine_or_url) as engine, engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    from alembic.runtime.migration import MigrationContext

    with reader(engine).connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    return None if rev is None else str(rev)


def head_revision() -> str:
    """The newest revision shipped with this package, as Alembic reads the scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        msg = f"no migration scripts in {MIGRATIONS_DIR}"
        raise RuntimeError(msg)
    return str(head)


def is_current(engine: sa.Engine) -> bool:
    """True when the database is at the newest shipped revision."""
    return current_revision(engine) == head_revision()


@functools.cache
def shipped_head(versions: Path = VERSIONS_DIR) -> str | None:
    """The newest shipped revision, read from the scripts' text without importing Alembic.

    None when the text does not say it plainly (a script whose revision lines do not match,
    a merge, two heads, no scripts): then only Alembic can tell, and ``ensure_current``
    asks it. A test holds this to ``head_revision()``.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    scripts = [p for p in versions.glob("*.py") if p.name != "__init__.py"]
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION_RE.findall(text), _DOWN_RE.findall(text)
        if len(rev) != 1 or len(down) != 1:
            return None
        revisions.add(rev[0])
        if down[0]:
            parents.add(down[0])
    heads = revisions - parents
    if len(revisions) != len(scripts) or len(heads) != 1 or not parents <= revisions:
        return None
    return heads.pop()


def database_revisions(conn: sa.Connection) -> list[str]:
    """What ``alembic_version`` holds, by a plain query: [] for a database never migrated."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return []
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
    return [str(v) for (v,) in rows]


def ensure_current(engine: sa.Engine) -> bool:
    """Migrate the database unless it is at the shipped head; True when Alembic was asked.

    The check is one plain read; Alembic is imported only when the database is empty,
    behind, ahead or otherwise not plainly at the head (``upgrade`` then decides, and
    refuses a revision it does not know, as before). Two processes that both find it
    behind both upgrade: the upgrade's own lock serializes them and the second is a no-op.
    """
    head = shipped_head()
    if head is not None:
        with reader(engine).connect() as conn:
            if database_revisions(conn) == [head]:
                return False
    upgrade(engine)
    return True


def _new_revision(message: str, *, autogenerate: bool) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

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
