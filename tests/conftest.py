"""Fixtures shared by the whole suite.

Database (one suite, either backend):

- ``db_url``: a fresh, empty database for the test. SQLite by default: a file in a temp
  directory of its own (not ``tmp_path``). When ``ORCH_TEST_DATABASE_URL`` is set (for example
  ``postgresql://postgres@127.0.0.1:5432/test``, as CI does), a uniquely named PostgreSQL
  database is created on that server for the test (``CREATE DATABASE`` through an AUTOCOMMIT
  connection to the URL's own database) and dropped ``WITH (FORCE)`` afterwards.
- ``engine``: an engine on ``db_url`` with every migration applied.

Git:

- ``make_repo(path=None, files=None, *, branch="main", message="initial commit")``: a real
  git repository with ``files`` (relative path -> text or bytes) committed once on
  ``branch``, with a local user.name / user.email so later commits work too. ``path``
  defaults to a fresh directory under the test's ``tmp_path``. Returns the repo's Path.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store import make_engine, normalize_url, upgrade

TEST_DATABASE_ENV = "ORCH_TEST_DATABASE_URL"

# The fake agents and test programs live in this folder: every sandbox of the suite may read
# it, wherever the checkout is (under /tmp or a home folder, both hidden in a sandbox).
# Subprocesses inherit it; tests that build an environment without ORCH_* keep this one.
SANDBOX_RO_ENV = "ORCH_SANDBOX_RO"
TESTS_DIR = Path(__file__).resolve().parent
os.environ[SANDBOX_RO_ENV] = str(TESTS_DIR)

MakeRepo = Callable[..., Path]


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh empty database: SQLite in a temp dir, or PostgreSQL per ORCH_TEST_DATABASE_URL."""
    server_url = os.environ.get(TEST_DATABASE_ENV, "").strip()
    if not server_url:
        # Its own directory, not tmp_path: a test may turn tmp_path into a git repo or a
        # state home, and the database file (and its -wal, -shm) must not land in either.
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'orchestrator.db'}"
        return
    base = normalize_url(server_url)
    name = f"orch_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on ``db_url``, upgraded to the newest migration."""
    eng = make_engine(db_url)
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _git(cwd: Path, *args: str) -> None:
    # Drop GIT_DIR, GIT_INDEX_FILE and friends: run from a git hook, they would point these
    # commands at the outer repository instead of the one being made.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, timeout=60)


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """A factory of real git repositories with one commit; see the module docstring."""
    counter = itertools.count(1)

    def _make(
        path: Path | None = None,
        files: Mapping[str, str | bytes] | None = None,
        *,
        branch: str = "main",
        message: str = "initial commit",
    ) -> Path:
        repo = path if path is not None else tmp_path / f"repo{next(counter)}"
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", branch)
        _git(repo, "config", "user.name", "Orchestrator Tests")
        _git(repo, "config", "user.email", "tests@orchestrator.invalid")
        _git(repo, "config", "commit.gpgsign", "false")
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
