"""A task's next job, claimed with its previous job's end (issue 19: transitions at the
engine's floor): the claim's rules on that one row, and a loop that is not woken for it.

Real database (SQLite, or PostgreSQL per ORCH_TEST_DATABASE_URL), real git, the fake
agents of ``test_engine`` as real child processes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.engine.worker import Worker
from orchestrator.store import control, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.rows import JobRow
from orchestrator.store.schema import jobs as jobs_table
from orchestrator.store.schema import task_deps

try:
    from test_engine import FULL, Harness
except ImportError:  # imported as tests.integration.test_follow
    from tests.integration.test_engine import FULL, Harness

ROOMY = jobq.ClaimLimits(total=10, per_repo=10)


@pytest.fixture
def h(tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]) -> Iterator[Harness]:
    harness = Harness(tmp_path, migrated_db_url, make_repo(files={"README.md": "demo\n"}))
    yield harness
    harness.stop()
    harness.engine.dispose()


def _queued(h: Harness, key: str) -> JobRow:
    (job,) = [j for j in h.jobs(key) if j.state == "queued"]
    return job


def _claim(h: Harness, job: JobRow, limits: jobq.ClaimLimits = ROOMY) -> JobRow | None:
    with h.engine.begin() as conn:
        return jobq.claim_queued_job(
            conn,
            job,
            task_state="active",
            repo_id=1,
            owner="w-follow",
            host="here",
            now=time.time(),
            lease_s=30,
            limits=limits,
            hold_stages=("deploy", "post-deploy-monitor"),
        )


def _set(h: Harness, job_id: int, **values: object) -> None:
    with h.engine.begin() as conn:
        conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id).values(**values))


def _run_other(h: Harness, key: str) -> JobRow:
    """Claim ``key``'s job the generic way: it runs (under another worker's lease)."""
    task_id = h.task(key).id
    with h.engine.begin() as conn:
        (job,) = jobq.claim_jobs(
            conn,
            owner="w-other",
            host="there",
            now=time.time(),
            lease_s=30,
            limits=ROOMY,
            task_id=task_id,
        )
    return job


def test_the_known_claim_takes_a_claimable_job_under_a_lease(h: Harness) -> None:
    h.add_repo()
    key = h.add_task()
    job = _queued(h, key)
    claimed = _claim(h, job)
    assert claimed is not None
    assert (claimed.id, claimed.state, claimed.lease_owner) == (job.id, "running", "w-follow")
    assert claimed.lease_expires_at is not None
    # Taken once: a second claim of the same row finds it running.
    assert _claim(h, job) is None


def test_the_known_claim_keeps_the_limits(h: Harness) -> None:
    h.add_repo()
    first, second = h.add_task("A"), h.add_task("B")
    _run_other(h, first)
    job = _queued(h, second)
    assert _claim(h, job, jobq.ClaimLimits(total=1, per_repo=5)) is None
    assert _claim(h, job, jobq.ClaimLimits(total=5, per_repo=1)) is None
    assert _claim(h, job, jobq.ClaimLimits(total=2, per_repo=2)) is not None


def test_the_known_claim_keeps_the_serial_gate(h: Harness) -> None:
    h.add_repo()
    first, second = h.add_task("A"), h.add_task("B")
    running = _run_other(h, first)
    job = _queued(h, second)
    _set(h, running.id, serial_key="demo")
    _set(h, job.id, serial_key="demo")
    job = _queued(h, second)
    assert _claim(h, job) is None  # another task holds the repo's gate
    _set(h, running.id, serial_key=None)
    assert _claim(h, job) is not None


def test_the_known_claim_waits_for_what_the_search_waits_for(h: Harness) -> None:
    h.add_repo()
    first, second = h.add_task("A"), h.add_task("B")
    job = _queued(h, second)
    # A dependency not done yet.
    waits, on = h.task(second).id, h.task(first).id
    with h.engine.begin() as conn:
        conn.execute(sa.insert(task_deps).values(task_id=waits, after_id=on))
    assert _claim(h, job) is None
    with h.engine.begin() as conn:
        conn.execute(sa.delete(task_deps))
    # Not due yet, then asked to stop.
    _set(h, job.id, not_before=time.time() + 3600)
    assert _claim(h, job) is None
    _set(h, job.id, not_before=0.0, cancel_requested=True)
    assert _claim(h, job) is None
    _set(h, job.id, cancel_requested=False)
    assert _claim(h, job) is not None


@contextlib.contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs (SAVEPOINT and RELEASE included)."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def _serial_handover(h: Harness, *, key_ended: str | None) -> tuple[JobRow | None, list[str]]:
    """A task's running serialized job ends and its next one, of the same serial key, is
    claimed in the same transaction (as a job's end does): the claim and its statements."""
    h.add_repo()
    key = h.add_task()
    first = _queued(h, key)
    _set(h, first.id, serial_key="demo")
    running = _run_other(h, key)
    assert (running.id, running.serial_key) == (first.id, "demo")
    now = time.time()
    with h.engine.begin() as conn:
        assert jobq.finish_job(
            conn, running.id, "w-other", now=now, outcome="completed", verdict="PASS",
            reasons=[], exit_code=0, notify=False,
        )  # fmt: skip
        nxt = queries.insert_job(
            conn, task_id=running.task_id, stage="deploy", agent="deploy-finalizer",
            attempt=None, now=now, serial_key="demo", notify=False,
        )  # fmt: skip
        with _statements(h.engine) as seen:
            claimed = jobq.claim_queued_job(
                conn,
                nxt,
                task_state="active",
                repo_id=1,
                owner="w-other",
                host="there",
                now=time.time(),
                lease_s=30,
                limits=ROOMY,
                hold_stages=("deploy", "post-deploy-monitor"),
                key_ended=key_ended,
            )
    return claimed, seen


def test_a_handed_over_serial_gate_is_claimed_in_one_read_and_one_update(h: Harness) -> None:
    # Issue 19: the pause switch, the running jobs and the gate's holders are one read
    # (they were three), and the transaction that just ended the gate's running job needs
    # no savepoint around the claim (SAVEPOINT and RELEASE, round trips on PostgreSQL):
    # no other transaction can be making a running job of that key.
    claimed, seen = _serial_handover(h, key_ended="demo")
    assert claimed is not None
    assert claimed.state == "running"
    assert len(seen) == 2, seen


def test_a_serial_gate_not_held_is_still_claimed_under_a_savepoint(h: Harness) -> None:
    # A key this transaction did not hold: another worker may be claiming it, and on
    # PostgreSQL the unique index's refusal must not abort the job's end.
    claimed, seen = _serial_handover(h, key_ended=None)
    assert claimed is not None
    savepoints = [s for s in seen if s.upper().startswith(("SAVEPOINT", "RELEASE"))]
    assert len(savepoints) == (0 if h.engine.dialect.name == "sqlite" else 2), seen
    assert len(seen) - len(savepoints) == 2, seen


def test_the_known_claim_heeds_orch_pause(h: Harness) -> None:
    # `orch pause` is read by the claim itself, in its one read.
    h.add_repo()
    job = _queued(h, h.add_task())
    with h.engine.begin() as conn:
        control.set_paused(conn, True, now=time.time())
    assert _claim(h, job) is None
    with h.engine.begin() as conn:
        control.set_paused(conn, False, now=time.time())
    assert _claim(h, job) is not None


def test_a_chain_of_jobs_does_not_wake_the_loop(
    tmp_path: Path, migrated_db_url: str, make_repo: Callable[..., Path]
) -> None:
    # No poll, no due time and no listener (whose connect wakes the loop once, on
    # PostgreSQL; its notices are test_wake's): the loop claims only when a job wakes it.
    h = Harness(
        tmp_path,
        migrated_db_url,
        make_repo(files={"README.md": "demo\n"}),
        poll_interval_s=3600,
        db_listen_enabled=False,
    )
    try:
        h.add_repo(FULL)
        key = h.add_task()
        worker = Worker(h.settings, h.engine)
        claims: list[float] = []
        claim = worker._claim

        def counted() -> bool:
            claims.append(time.time())
            return claim()

        worker._claim = counted  # type: ignore[method-assign]
        worker.run(until_idle=True)
        assert (h.task(key).stage, h.task(key).state) == ("post-deploy-monitor", "done")
        assert len(h.jobs(key)) == 5
        # Once to start the chain, once when it ended: each job in between was claimed
        # with its previous job's end, by the thread that ran it (the loop used to be
        # woken, and to claim, after every one of the five).
        assert len(claims) == 2
        with h.engine.connect() as conn:
            assert not control.work_pending(conn)
    finally:
        h.engine.dispose()
