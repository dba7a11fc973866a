"""Wake-ups across processes: LISTEN/NOTIFY on PostgreSQL, the poll everywhere.

The worker-level test makes the poll and the heartbeat far longer than the test may take,
so only a NOTIFY can bring the worker to work that another process queued.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store import wake

try:
    from test_engine import Harness
except ImportError:  # imported as tests.integration.test_wake
    from tests.integration.test_engine import Harness

pg_only = pytest.mark.skipif(
    not os.environ.get("ORCH_TEST_DATABASE_URL"),
    reason="LISTEN/NOTIFY is PostgreSQL's; on SQLite workers find work by polling",
)


class Heard:
    """The payloads a listener delivered, in order."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, payload: str) -> None:
        with self._lock:
            self.payloads.append(payload)

    def wait_for(self, payload: str, deadline_s: float = 30) -> list[str]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            with self._lock:
                if payload in self.payloads:
                    return list(self.payloads)
            time.sleep(0.02)
        pytest.fail(f"{payload!r} never arrived; heard {self.payloads}")


@pytest.fixture
def listening(engine: sa.Engine) -> Iterator[tuple[wake.WakeListener, Heard]]:
    heard = Heard()
    listener = wake.WakeListener(engine.url, heard)
    listener.start()
    assert listener.listening.wait(30), "the listener never connected"
    try:
        yield listener, heard
    finally:
        listener.stop()


def test_notify_outside_postgresql_is_nothing(engine: sa.Engine) -> None:
    if engine.dialect.name == "postgresql":
        pytest.skip("this is the SQLite side; the PostgreSQL side is the tests below")
    with engine.begin() as conn:
        wake.notify(conn, "job-queued")  # no such statement on SQLite: must not fail
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_listener_conninfo_is_a_libpq_uri_with_the_password() -> None:
    url = sa.make_url("postgresql+psycopg://u:s3cret@127.0.0.1:5432/db?sslmode=disable")
    assert wake.listener_conninfo(url) == (
        "postgresql://u:s3cret@127.0.0.1:5432/db?sslmode=disable"
    )


@pg_only
def test_a_notify_arrives_on_commit_and_never_on_rollback(
    engine: sa.Engine, listening: tuple[wake.WakeListener, Heard]
) -> None:
    _listener, heard = listening
    heard.wait_for(wake.CONNECTED)
    with engine.connect() as conn:
        tx = conn.begin()
        wake.notify(conn, "rolled-back")
        tx.rollback()
        with conn.begin():
            wake.notify(conn, "committed")
    got = heard.wait_for("committed")
    # PostgreSQL delivers in commit order: had the rolled-back one been sent, it would be
    # here already.
    assert "rolled-back" not in got


@pg_only
def test_queueing_and_ending_jobs_notify(
    engine: sa.Engine,
    listening: tuple[wake.WakeListener, Heard],
    tmp_path: Path,
    make_repo: Callable[..., Path],
) -> None:
    _listener, heard = listening
    h = Harness(tmp_path, engine.url.render_as_string(hide_password=False), make_repo())
    try:
        h.add_repo()
        h.add_task()  # queues its development job
        heard.wait_for("job-queued")
        h.run_until_idle()  # every job ends
        heard.wait_for("job-finished")
    finally:
        h.engine.dispose()


@pg_only
def test_a_next_job_taken_with_its_end_wakes_nobody(
    engine: sa.Engine,
    listening: tuple[wake.WakeListener, Heard],
    tmp_path: Path,
    make_repo: Callable[..., Path],
) -> None:
    _listener, heard = listening
    h = Harness(tmp_path, engine.url.render_as_string(hide_password=False), make_repo())
    try:
        h.add_repo()  # development, testing, deploy-staging
        h.add_task()
        before = len(heard.wait_for("job-queued"))
        h.run_until_idle()
        with engine.begin() as conn:
            wake.notify(conn, "sentinel")  # delivered after all the run's, in commit order
        got = heard.wait_for("sentinel")[before:-1]
        # Each next job was claimed in the transaction that queued it, by the worker that
        # ran the one before: no other worker could take it or its slot. Only the last
        # end, which leaves a free slot, tells them (the old way: five notices).
        assert got == ["job-finished"], got
    finally:
        h.engine.dispose()


@pg_only
def test_the_listener_reconnects_when_its_session_is_terminated(
    engine: sa.Engine, listening: tuple[wake.WakeListener, Heard]
) -> None:
    listener, heard = listening
    assert listener.connects == 1
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :app AND datname = current_database()"
            ),
            {"app": wake.APPLICATION_NAME},
        ).scalar()
    assert killed == 1
    end = time.monotonic() + 30
    while listener.connects < 2:
        assert time.monotonic() < end, "the listener never came back"
        time.sleep(0.02)
    with engine.begin() as conn:
        wake.notify(conn, "after-the-drop")
    heard.wait_for("after-the-drop")


@pg_only
@pytest.mark.timeout(180)
def test_a_worker_wakes_for_a_task_another_process_files(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> None:
    # A poll and a heartbeat of ten minutes: without a NOTIFY the worker would sleep
    # through the whole test after its first look.
    h = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(),
        poll_interval_s=600,
        heartbeat_interval_s=300,
        job_lease_s=600,
    )
    try:
        h.add_repo()
        worker = h.start()
        h.wait_for(lambda: worker.listener is not None and worker.listener.listening.is_set())
        h.wait_for(lambda: worker._last_claim > 0)  # it has looked once and found nothing
        env = {
            **os.environ,
            "ORCH_HOME": str(h.settings.home),
            "ORCH_DATABASE_URL": migrated_db_url,
        }
        filed = subprocess.run(
            [sys.executable, "-m", "orchestrator", "task", "add", "demo", "from elsewhere"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = filed.stdout.strip().split()[-1]
        h.wait_for(lambda: h.task(key) is not None and h.task(key).state == "done", 120)
    finally:
        h.stop()
        h.engine.dispose()


def test_without_a_listener_the_poll_finds_the_work(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> None:
    # Both backends: a task filed by another engine (as another process would) is found
    # by the poll alone.
    h = Harness(
        tmp_path, migrated_db_url, make_repo(), poll_interval_s=0.2, db_listen_enabled=False
    )
    (tmp_path / "other").mkdir()
    other = Harness(tmp_path / "other", migrated_db_url, h.repo_path, home=h.settings.home)
    try:
        h.add_repo()
        worker = h.start()
        assert worker.listener is None
        h.wait_for(lambda: worker._last_claim > 0)
        key = other.add_task()
        h.wait_for(lambda: h.task(key).state == "done")
    finally:
        h.stop()
        h.engine.dispose()
        other.engine.dispose()
