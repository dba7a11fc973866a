"""A task's next job claimed at its previous job's end (``claim_queued_job``): its one read
(``_ROOM``) decides the serial gate and `orch pause` as the three reads it replaced did
(``serial_gate_holders``), and the savepoint it skips on PostgreSQL when the job's end held
the gate's key is never needed: a concurrent claim of that key is refused, not the end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.store import control, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.schema import jobs as jobs_table
from orchestrator.store.schema import tasks as tasks_table

try:
    from test_engine import Harness
    from test_follow import ROOMY, _queued
except ImportError:  # imported as tests.integration.test_claim_handover
    from tests.integration.test_engine import Harness
    from tests.integration.test_follow import ROOMY, _queued

HOLD = ("deploy", "post-deploy-monitor")


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


def _set_job(h: Harness, job_id: int, **values: object) -> None:
    with h.engine.begin() as conn:
        conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id).values(**values))


def _set_task(h: Harness, key: str, **values: object) -> None:
    with h.engine.begin() as conn:
        conn.execute(sa.update(tasks_table).where(tasks_table.c.key == key).values(**values))


def _run(h: Harness, key: str, serial_key: str | None = "demo") -> None:
    job = _queued(h, key)
    _set_job(h, job.id, serial_key=serial_key)
    task_id = h.task(key).id
    with h.engine.begin() as conn:
        jobq.claim_jobs(conn, owner="w-other", host="there", now=time.time(), lease_s=30,
                        limits=ROOMY, task_id=task_id)  # fmt: skip


def _both(h: Harness, key: str, hold: tuple[str, ...], serial_key: str | None = "demo"):
    """(old decision, new decision) for ``key``'s queued job: may it run now?"""
    job = _queued(h, key)
    _set_job(h, job.id, serial_key=serial_key)
    job = _queued(h, key)
    with h.engine.connect() as conn, conn.begin() as tx:
        holders = jobq.serial_gate_holders(conn, hold)
        old = serial_key is None or holders.get(serial_key, job.task_id) == job.task_id
        new = jobq.claim_queued_job(
            conn, job, task_state="active", repo_id=1, owner="w", host="h",
            now=time.time(), lease_s=30, limits=ROOMY, hold_stages=hold,
        ) is not None  # fmt: skip
        tx.rollback()
    return old, new


def test_running_job_of_another_task_holds_the_gate(h: Harness) -> None:
    h.add_repo()
    a, b = h.add_task("A"), h.add_task("B")
    _run(h, b)
    assert _both(h, a, HOLD) == (False, False)
    assert _both(h, a, ()) == (False, False)
    assert _both(h, a, HOLD, serial_key=None) == (True, True)


def test_held_between_by_another_task(h: Harness) -> None:
    h.add_repo()
    a, b = h.add_task("A"), h.add_task("B")
    _set_task(h, b, stage="deploy")
    assert _both(h, a, HOLD) == (False, False)
    assert _both(h, a, ()) == (True, True)  # empty expanding hold_stages
    _set_task(h, b, state="blocked")
    assert _both(h, a, HOLD) == (True, True)
    _set_task(h, b, state="deferred")
    assert _both(h, a, HOLD) == (False, False)


def test_several_at_hold_stages_first_live_wins(h: Harness) -> None:
    h.add_repo()
    a, b, c = h.add_task("A"), h.add_task("B"), h.add_task("C")
    _set_task(h, a, stage="deploy", updated_at=10.0)
    _set_task(h, b, stage="post-deploy-monitor", updated_at=20.0)
    assert _both(h, a, HOLD) == (True, True)
    _set_task(h, b, updated_at=5.0)
    assert _both(h, a, HOLD) == (False, False)
    _set_task(h, b, state="blocked")
    _set_task(h, c, stage="deploy", updated_at=1.0, state="cancelled")
    assert _both(h, a, HOLD) == (True, True)


def test_running_other_task_beats_own_hold(h: Harness) -> None:
    h.add_repo()
    a, b = h.add_task("A"), h.add_task("B")
    _set_task(h, a, stage="deploy", updated_at=1.0)
    _run(h, b)
    assert _both(h, a, HOLD) == (False, False)


def test_paused_values(h: Harness) -> None:
    h.add_repo()
    with h.engine.connect() as conn:
        params = {"repo_id": 1, "serial_key": None, "hold_stages": []}
        assert conn.execute(jobq._ROOM, params).one()[0] is None
    for value in (True, False, True, False):
        with h.engine.begin() as conn:
            control.set_paused(conn, value, now=time.time())
        with h.engine.connect() as conn:
            got = conn.execute(jobq._ROOM, params).one()[0]
        assert got is value, (h.engine.dialect.name, got, type(got))


def test_savepoint_skip_under_a_concurrent_claim_of_the_key(h: Harness) -> None:
    """T1 ends task A's running 'demo' job and claims A's next 'demo' job with no
    savepoint; T2 meanwhile forces task B's 'demo' job to running (a stale claim). T1
    must commit; T2 must be the one refused by the index."""
    if h.engine.dialect.name == "sqlite":
        pytest.skip("SQLite serializes writers: no concurrent claim to race")
    h.add_repo()
    a, b = h.add_task("A"), h.add_task("B")
    _run(h, a)
    (old,) = [j for j in h.jobs(a) if j.state == "running"]
    bjob = _queued(h, b)
    _set_job(h, bjob.id, serial_key="demo")
    t2_error: list[BaseException] = []
    t2_started = threading.Event()

    def stale_claim() -> None:
        try:
            with h.engine.begin() as conn2:
                t2_started.set()
                conn2.execute(
                    sa.update(jobs_table).where(jobs_table.c.id == bjob.id)
                    .values(state="running", lease_owner="w2")
                )  # fmt: skip
        except BaseException as exc:
            t2_error.append(exc)

    now = time.time()
    with h.engine.begin() as conn:
        assert jobq.finish_job(conn, old.id, "w-other", now=now, outcome="completed",
                               verdict="PASS", reasons=[], exit_code=0, notify=False)  # fmt: skip
        nxt = queries.insert_job(conn, task_id=old.task_id, stage="deploy",
                                 agent="deploy-finalizer", attempt=None, now=now,
                                 serial_key="demo", notify=False)  # fmt: skip
        t = threading.Thread(target=stale_claim)
        t.start()
        t2_started.wait()
        time.sleep(0.5)  # let T2 reach the index wait (if any)
        assert t.is_alive()  # T2 waits for T1 (the old job's index entry, being ended)
        claimed = jobq.claim_queued_job(
            conn, nxt, task_state="active", repo_id=1, owner="w-other", host="there",
            now=time.time(), lease_s=30, limits=ROOMY, hold_stages=HOLD, key_ended="demo",
        )  # fmt: skip
        assert claimed is not None
        conn.execute(sa.select(1))  # the transaction is still usable
    t.join()
    running = [j for j in h.jobs(a) if j.state == "running"]
    assert [j.id for j in running] == [nxt.id]
    if h.engine.dialect.name != "sqlite":
        assert len(t2_error) == 1, t2_error
        assert isinstance(t2_error[0], sa.exc.IntegrityError), t2_error


def test_consequence_if_the_skipped_savepoint_were_needed(h: Harness) -> None:
    """Not a path the engine takes: key_ended claimed while another running job of the
    key exists (same task, so the gate read lets it through). Shows what a violation
    without the savepoint does to the job-end transaction on PostgreSQL."""
    h.add_repo()
    a = h.add_task("A")
    _run(h, a)
    (old,) = [j for j in h.jobs(a) if j.state == "running"]
    now = time.time()
    with h.engine.connect() as conn, conn.begin() as tx:
        nxt = queries.insert_job(conn, task_id=old.task_id, stage="deploy",
                                 agent="deploy-finalizer", attempt=None, now=now,
                                 serial_key="demo", notify=False)  # fmt: skip
        claimed = jobq.claim_queued_job(
            conn, nxt, task_state="active", repo_id=1, owner="w-other", host="there",
            now=time.time(), lease_s=30, limits=ROOMY, hold_stages=HOLD,
            key_ended="demo",
        )  # fmt: skip
        assert claimed is None
        if h.engine.dialect.name == "sqlite":
            conn.execute(sa.select(1))
        else:
            with pytest.raises(sa.exc.DBAPIError, match="aborted"):
                conn.execute(sa.select(1))
        tx.rollback()


def test_hold_stage_tie_on_updated_at(h: Harness) -> None:
    """Two live tasks at hold stages with the same updated_at: ORDER BY updated_at alone
    leaves the holder to the plan; the old and new reads should at least agree."""
    h.add_repo()
    a, b = h.add_task("A"), h.add_task("B")
    _set_task(h, a, stage="deploy", updated_at=5.0)
    _set_task(h, b, stage="deploy", updated_at=5.0)
    assert _both(h, a, HOLD)[0] == _both(h, a, HOLD)[1]
    assert _both(h, b, HOLD)[0] == _both(h, b, HOLD)[1]
