"""Jobs under leases: claim, heartbeat, fence, finish, re-queue, cancel.

A claimed job carries its lease owner (a worker id) and an expiry that heartbeats renew.
Every write a worker makes about a running job is *fenced* by ``lease_owner``: once a
lease has expired and another worker took the job over, the old owner's writes match no
row, so a job's bookkeeping happens once even when two workers both believe they own it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.store import wake
from orchestrator.store.control import PAUSED_KEY
from orchestrator.store.dependencies import waits_for_dependency
from orchestrator.store.rows import JobRow
from orchestrator.store.schema import control, jobs, repos, tasks

# Task states whose queued jobs may be claimed.
_CLAIMABLE_TASK_STATES = ("active", "deferred")


def _rows(result: sa.Result[Any]) -> list[JobRow]:
    return [JobRow(**r._mapping) for r in result]


@dataclass(frozen=True)
class ClaimLimits:
    """How many jobs may run at once."""

    total: int
    per_repo: int


# Built once: a claim runs on every job's end, and SQLAlchemy builds and keys a statement
# anew on every call unless it is a constant (the compiled form is cached by that key).
_RUNNING = (
    sa.select(tasks.c.repo_id, jobs.c.serial_key, jobs.c.task_id)
    .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id))
    .where(jobs.c.state == "running")
)
_HELD_BETWEEN = (
    sa.select(repos.c.name, tasks.c.id)
    .select_from(tasks.join(repos, repos.c.id == tasks.c.repo_id))
    .where(
        tasks.c.stage.in_(sa.bindparam("hold_stages", expanding=True)),
        tasks.c.state.in_(_CLAIMABLE_TASK_STATES),
    )
    .order_by(tasks.c.updated_at)
)


# What ``claim_queued_job`` asks before its UPDATE, in one statement (it was three: the
# pause switch, the running jobs and the tasks holding serial gates between their jobs, a
# round trip each on PostgreSQL, in every job's end): `orch pause`, the running jobs in
# all and in the repo, and who holds the job's serial gate: the task of the running job
# that has the key (at most one: the unique index), else the first live task of the repo
# at a hold stage, as in ``serial_gate_holders``.
_RUNNING_JOBS = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state == "running")
_ROOM = sa.select(
    sa.select(control.c.value).where(control.c.key == PAUSED_KEY).scalar_subquery(),
    _RUNNING_JOBS.scalar_subquery(),
    _RUNNING_JOBS.join_from(jobs, tasks, tasks.c.id == jobs.c.task_id)
    .where(tasks.c.repo_id == sa.bindparam("repo_id"))
    .scalar_subquery(),
    sa.select(jobs.c.task_id)
    .where(jobs.c.state == "running", jobs.c.serial_key == sa.bindparam("serial_key"))
    .limit(1)
    .scalar_subquery(),
    _HELD_BETWEEN.with_only_columns(tasks.c.id)
    .where(repos.c.name == sa.bindparam("serial_key"))
    .limit(1)
    .scalar_subquery(),
)


@dataclass(frozen=True)
class _Running:
    """The running jobs, in one read: in all, per repo id, and serial key → its task."""

    total: int
    per_repo: dict[int, int]
    holders: dict[str, int]


def _running(conn: sa.Connection) -> _Running:
    total = 0
    per_repo: dict[int, int] = {}
    holders: dict[str, int] = {}
    for repo_id, serial_key, task_id in conn.execute(_RUNNING):
        total += 1
        per_repo[repo_id] = per_repo.get(repo_id, 0) + 1
        if serial_key is not None:
            holders[serial_key] = task_id
    return _Running(total, per_repo, holders)


def _add_held_between(
    conn: sa.Connection, holders: dict[str, int], hold_stages: Sequence[str]
) -> dict[str, int]:
    if hold_stages:
        for key, task_id in conn.execute(_HELD_BETWEEN, {"hold_stages": list(hold_stages)}):
            holders.setdefault(key, task_id)
    return holders


def serial_gate_holders(conn: sa.Connection, hold_stages: Sequence[str] = ()) -> dict[str, int]:
    """Serial key → the task holding that serial gate.

    A task holds it while one of its serialized jobs runs, and also between them: while it
    is live at one of ``hold_stages`` (deploy, post-deploy-monitor), so that no other task
    of the repo merges or deploys between its deploy and its health watch.
    """
    return _add_held_between(conn, dict(_running(conn).holders), hold_stages)


def running_counts(conn: sa.Connection) -> tuple[int, dict[int, int], set[str]]:
    """Running jobs: in all, per repo id, and the serial keys they hold."""
    running = _running(conn)
    return running.total, running.per_repo, set(running.holders)


def claim_jobs(
    conn: sa.Connection,
    *,
    owner: str,
    host: str,
    now: float,
    lease_s: float,
    limits: ClaimLimits,
    exclude_agents: Sequence[str] = (),
    max_jobs: int | None = None,
    task_id: int | None = None,
    hold_stages: Sequence[str] = (),
) -> list[JobRow]:
    """Claim queued jobs whose time has come, within the limits and the serial gate.

    On PostgreSQL candidate rows are locked with ``FOR UPDATE SKIP LOCKED`` so concurrent
    workers never claim one job twice; on SQLite ``BEGIN IMMEDIATE`` serializes claims. The
    unique index on running serial keys is the last word: a claim that would break it is
    undone by its savepoint and the job stays queued.
    """
    running = _running(conn)
    per_repo = running.per_repo
    holders = _add_held_between(conn, dict(running.holders), hold_stages)
    room = limits.total - running.total
    if max_jobs is not None:
        room = min(room, max_jobs)
    if room <= 0:
        return []
    stmt = (
        sa.select(jobs.c.id, jobs.c.serial_key, tasks.c.repo_id, tasks.c.state, jobs.c.task_id)
        .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id))
        .where(
            jobs.c.state == "queued",
            jobs.c.not_before <= now,
            jobs.c.cancel_requested.is_(False),
            tasks.c.state.in_(_CLAIMABLE_TASK_STATES),
            ~waits_for_dependency(jobs.c.task_id),
        )
        .order_by(jobs.c.not_before, jobs.c.id)
        .limit(max(room * 4, 16))
    )
    # Leave out, in SQL, what cannot be claimed now: jobs of tasks still waiting for a
    # dependency (above), jobs whose serial gate another task holds, and repos at their
    # limit. Else the LIMIT window can fill with blocked jobs (a queue of tasks waiting to
    # merge, or for another task to be done) while a claimable one, even the gate holder's
    # own next job, lies beyond it, and nothing is claimed ever again.
    if holders:
        stmt = stmt.where(
            sa.or_(
                jobs.c.serial_key.is_(None),
                jobs.c.serial_key.not_in(sorted(holders)),
                jobs.c.task_id.in_(sorted(set(holders.values()))),
            )
        )
    full = sorted(repo for repo, n in per_repo.items() if n >= limits.per_repo)
    if full:
        stmt = stmt.where(tasks.c.repo_id.not_in(full))
    if exclude_agents:
        stmt = stmt.where(jobs.c.agent.not_in(list(exclude_agents)))
    if task_id is not None:
        stmt = stmt.where(jobs.c.task_id == task_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=jobs)
    claimed: list[JobRow] = []
    # On SQLite BEGIN IMMEDIATE already serializes claims, so the index cannot be hit and
    # a savepoint per claim would only cost two statements.
    guard = conn.dialect.name != "sqlite"
    for job_id, serial_key, repo_id, task_state, job_task in conn.execute(stmt).all():
        if len(claimed) >= room:
            break
        if per_repo.get(repo_id, 0) >= limits.per_repo:
            continue
        if serial_key is not None and holders.get(serial_key, job_task) != job_task:
            continue
        lease = {
            "job_id": job_id,
            "owner": owner,
            "expires": now + lease_s,
            "host": host,
            "now": now,
        }
        job = _take(conn, _CLAIM, lease, guard=guard)
        if job is None:
            continue
        if task_state == "deferred":
            conn.execute(_ACTIVATE, {"task_id": job.task_id, "now": now})
        claimed.append(job)
        per_repo[repo_id] = per_repo.get(repo_id, 0) + 1
        if serial_key is not None:
            holders[serial_key] = job_task
    return claimed


_CLAIM = (
    sa.update(jobs)
    .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.state == "queued")
    .values(
        state="running",
        lease_owner=sa.bindparam("owner"),
        lease_expires_at=sa.bindparam("expires"),
        host=sa.bindparam("host"),
        started_at=sa.bindparam("now"),
        pid=None,
        pgid=None,
    )
    .returning(*jobs.c)
)
# The claim of one known job (``claim_queued_job``): the conditions the search of
# ``claim_jobs`` puts in its WHERE, here on the row itself.
_CLAIM_KNOWN = _CLAIM.where(
    jobs.c.not_before <= sa.bindparam("now"),
    jobs.c.cancel_requested.is_(False),
    sa.exists(
        sa.select(tasks.c.id).where(
            tasks.c.id == jobs.c.task_id, tasks.c.state.in_(_CLAIMABLE_TASK_STATES)
        )
    ),
    ~waits_for_dependency(jobs.c.task_id),
)
_ACTIVATE = (
    sa.update(tasks)
    .where(tasks.c.id == sa.bindparam("task_id"), tasks.c.state == "deferred")
    .values(state="active", updated_at=sa.bindparam("now"))
)


def _take(
    conn: sa.Connection, stmt: sa.Executable, lease: Mapping[str, Any], *, guard: bool
) -> JobRow | None:
    """Run a claim's UPDATE; the job, or None when it was not claimable any more."""
    try:
        if guard:
            with conn.begin_nested():
                row = conn.execute(stmt, lease).one_or_none()
        else:
            row = conn.execute(stmt, lease).one_or_none()
    except sa.exc.IntegrityError:
        # Another worker took the serial gate between our read and our write.
        return None
    return None if row is None else JobRow(**row._mapping)


def claim_queued_job(
    conn: sa.Connection,
    job: JobRow,
    *,
    task_state: str,
    repo_id: int,
    owner: str,
    host: str,
    now: float,
    lease_s: float,
    limits: ClaimLimits,
    hold_stages: Sequence[str] = (),
    key_ended: str | None = None,
) -> JobRow | None:
    """Claim ``job`` itself, if ``claim_jobs`` would claim it now and `orch pause` is not
    in force; the running job or None.

    For a task's next job, queued in this same transaction by the worker that ran the
    previous one (``task_state``: the task's state, as written there; ``repo_id``: its
    repo): the same rules as ``claim_jobs`` (due, not cancelled, the task claimable and
    waiting for no dependency, the limits, the serial gate) without the search for
    candidates, and recorded the same way, under a lease, so recovery and other workers
    see it: one read (the pause switch, the running jobs, the gate's holder) and the one
    UPDATE.

    ``key_ended``: the serial key of a running job this transaction has just finished
    (fenced: it was ours), if any. When it is the job's own key, no other transaction can
    make a running job of that key before this one commits (the unique index holds them
    to ours, then makes them wait for it), so the UPDATE cannot break the index and needs
    no savepoint.
    """
    params = {"repo_id": repo_id, "serial_key": job.serial_key, "hold_stages": list(hold_stages)}
    paused, total, in_repo, runs_key, held_by = conn.execute(_ROOM, params).one()
    if paused or total >= limits.total or in_repo >= limits.per_repo:
        return None
    if job.serial_key is not None:
        holder = runs_key if runs_key is not None else held_by
        if holder is not None and holder != job.task_id:
            return None
    lease = {"job_id": job.id, "owner": owner, "expires": now + lease_s, "host": host, "now": now}
    # On PostgreSQL the UPDATE locks the row: a worker searching with SKIP LOCKED passes
    # it by, one that updates it waits and then finds it running. The unique index on
    # running serial keys stays the last word, under a savepoint as in ``claim_jobs``
    # unless this transaction holds the key (``key_ended``).
    claimed = _take(
        conn,
        _CLAIM_KNOWN,
        lease,
        guard=conn.dialect.name != "sqlite"
        and job.serial_key is not None
        and job.serial_key != key_ended,
    )
    if claimed is not None and task_state == "deferred":
        conn.execute(_ACTIVATE, {"task_id": job.task_id, "now": now})
    return claimed


def record_process(
    conn: sa.Connection, job_id: int, owner: str, *, pid: int, pgid: int, log_path: str
) -> bool:
    """Remember the process group of a job (the registry the reaper reads); fenced."""
    params = {"b_id": job_id, "b_owner": owner, "b_pid": pid, "b_pgid": pgid, "b_log": log_path}
    return conn.execute(_RECORD_PROCESS, params).rowcount == 1


_FENCED = (
    jobs.c.id == sa.bindparam("b_id"),
    jobs.c.lease_owner == sa.bindparam("b_owner"),
    jobs.c.state == "running",
)
_RECORD_PROCESS = (
    sa.update(jobs)
    .where(*_FENCED)
    .values(pid=sa.bindparam("b_pid"), pgid=sa.bindparam("b_pgid"), log_path=sa.bindparam("b_log"))
)
_FINISH = (
    sa.update(jobs)
    .where(*_FENCED)
    .values(
        state="finished",
        outcome=sa.bindparam("b_outcome"),
        verdict=sa.bindparam("b_verdict"),
        reasons=sa.bindparam("b_reasons", type_=jobs.c.reasons.type),
        exit_code=sa.bindparam("b_exit_code"),
        finished_at=sa.bindparam("b_now"),
        lease_expires_at=None,
        cost_usd=sa.bindparam("b_cost"),
        tokens_in=sa.bindparam("b_tokens_in"),
        tokens_out=sa.bindparam("b_tokens_out"),
    )
)
# A record made before the job ran (an approval's supplied artifact) is kept: the
# artifacts are set only when the job recorded some.
_FINISH_RECORDING = _FINISH.values(
    artifacts=sa.bindparam("b_artifacts", type_=jobs.c.artifacts.type)
)


def heartbeat(
    conn: sa.Connection, owner: str, *, now: float, lease_s: float, job_ids: Sequence[int]
) -> set[int]:
    """Renew this worker's leases on ``job_ids``; returns those taken over by someone else.

    Only the jobs the worker really runs: a job whose thread gave up (the database was gone
    when it ended) must let its lease run out, so that recovery takes it back. A job that
    is not renewed because it has just finished is not taken over; one that is queued again
    or running under another owner is (our lease ran out meanwhile).
    """
    if not job_ids:
        return set()
    renewed = conn.execute(
        sa.update(jobs)
        .where(
            jobs.c.lease_owner == owner,
            jobs.c.state == "running",
            jobs.c.id.in_(list(job_ids)),
        )
        .values(lease_expires_at=now + lease_s)
        .returning(jobs.c.id)
    )
    missing = set(job_ids) - {row[0] for row in renewed}
    if not missing:
        return set()
    taken = conn.execute(
        sa.select(jobs.c.id).where(jobs.c.id.in_(sorted(missing)), jobs.c.state != "finished")
    )
    return {row[0] for row in taken}


def still_owned(conn: sa.Connection, job_id: int, owner: str) -> JobRow | None:
    """The running job if ``owner`` still holds its lease (the fence), else None."""
    row = conn.execute(
        sa.select(jobs).where(
            jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.state == "running"
        )
    ).one_or_none()
    return None if row is None else JobRow(**row._mapping)


def finish_job(
    conn: sa.Connection,
    job_id: int,
    owner: str,
    *,
    now: float,
    outcome: str,
    verdict: str | None,
    reasons: Sequence[str],
    exit_code: int | None,
    cost_usd: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    earlier: Sequence[str] = (),
    artifacts: Mapping[str, str] | None = None,
    notify: bool = True,
) -> bool:
    """Mark the job finished if ``owner`` still holds it; False means someone else does.

    ``notify``: tell the other workers that a slot is free (PostgreSQL); the caller that
    refills the slot in the same transaction says so itself when it frees anything.

    ``artifacts``: {name: SHA-256} of the artifacts the orchestrator recorded for the job.

    ``earlier``: the reasons the job carried when it was claimed (a recovery, a re-queue),
    kept ahead of the new ones. They cannot have changed since: anything that writes them
    also takes the lease, and then this fenced update matches no row.
    """
    params: dict[str, object] = {
        "b_id": job_id,
        "b_owner": owner,
        "b_outcome": outcome,
        "b_verdict": verdict,
        "b_reasons": [*earlier, *reasons],
        "b_exit_code": exit_code,
        "b_now": now,
        "b_cost": cost_usd,
        "b_tokens_in": tokens_in,
        "b_tokens_out": tokens_out,
    }
    stmt = _FINISH
    if artifacts:
        stmt = _FINISH_RECORDING
        params["b_artifacts"] = dict(artifacts)
    result = conn.execute(stmt, params)
    if result.rowcount != 1:
        return False
    if notify:
        # Its slot, and perhaps its repo's serial gate, are free for any worker now.
        wake.notify(conn, "job-finished")
    return True


def requeue(
    conn: sa.Connection,
    job_id: int,
    *,
    now: float,
    reason: str,
    owner: str | None = None,
    not_before: float | None = None,
) -> bool:
    """Put a running job back in the queue without spending a retry (same attempt), due
    at ``not_before`` (default: now). A reason the job already ends with is not repeated
    (a job that waits again and again for the same thing).

    With ``owner`` the write is fenced to that lease holder; without it (recovery of an
    expired lease) it applies to any running job.
    """
    where = [jobs.c.id == job_id, jobs.c.state == "running"]
    if owner is not None:
        where.append(jobs.c.lease_owner == owner)
    job = conn.execute(sa.select(jobs.c.reasons).where(*where)).one_or_none()
    if job is None:
        return False
    earlier = list(job[0] or [])
    reasons = earlier if earlier[-1:] == [reason] else [*earlier, reason]
    result = conn.execute(
        sa.update(jobs)
        .where(*where)
        .values(
            state="queued",
            lease_owner=None,
            lease_expires_at=None,
            host=None,
            pid=None,
            pgid=None,
            started_at=None,
            not_before=now if not_before is None else not_before,
            reasons=reasons,
            reserved_usd=None,
        )
    )
    if result.rowcount != 1:
        return False
    wake.notify(conn, "job-queued")
    return True


def expired_leases(conn: sa.Connection, *, now: float) -> list[JobRow]:
    """Running jobs whose lease ran out: their worker died or hangs."""
    stmt = (
        sa.select(jobs)
        .where(jobs.c.state == "running", jobs.c.lease_expires_at < now)
        .order_by(jobs.c.id)
    )
    return _rows(conn.execute(stmt))


def owned_running(conn: sa.Connection, owner: str) -> list[JobRow]:
    """Running jobs under ``owner``'s lease."""
    stmt = sa.select(jobs).where(jobs.c.lease_owner == owner, jobs.c.state == "running")
    return _rows(conn.execute(stmt))


def running_on_host(conn: sa.Connection, host: str) -> list[JobRow]:
    """Running jobs whose processes live on ``host`` (the per-host pgid registry)."""
    stmt = sa.select(jobs).where(jobs.c.host == host, jobs.c.state == "running")
    return _rows(conn.execute(stmt))


def request_cancel(conn: sa.Connection, task_id: int, *, now: float) -> None:
    """Cancel a task's jobs: queued ones end at once; running ones are flagged for a kill."""
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.task_id == task_id, jobs.c.state == "queued")
        .values(state="finished", finished_at=now, reasons=["cancelled before it started"])
    )
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.task_id == task_id, jobs.c.state == "running")
        .values(cancel_requested=True)
    )


def drop_queued(conn: sa.Connection, task_id: int, *, now: float, reason: str) -> int:
    """End a task's queued jobs (superseded by a retry or an approval)."""
    result = conn.execute(
        sa.update(jobs)
        .where(jobs.c.task_id == task_id, jobs.c.state == "queued")
        .values(state="finished", finished_at=now, reasons=[reason])
    )
    return int(result.rowcount)


def next_wakeup(conn: sa.Connection, *, after: float | None = None) -> float | None:
    """The earliest ``not_before`` of a claimable queued job (later than ``after``)."""
    stmt = (
        sa.select(sa.func.min(jobs.c.not_before))
        .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id))
        .where(jobs.c.state == "queued", tasks.c.state.in_(_CLAIMABLE_TASK_STATES))
    )
    if after is not None:
        stmt = stmt.where(jobs.c.not_before > after)
    value = conn.execute(stmt).scalar()
    return None if value is None else float(value)


def wake_waiting(conn: sa.Connection, *, now: float, said: str, repo_id: int | None = None) -> int:
    """Make the queued jobs due now whose task (or the job itself) waits with a reason
    containing ``said`` (a paused backend resumed by hand, a pull request's checks come
    in), of the repo ``repo_id`` (None: any); how many."""
    stmt = (
        sa.select(jobs.c.id, jobs.c.reasons, tasks.c.reasons)
        .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id))
        .where(jobs.c.state == "queued", jobs.c.not_before > now)
    )
    if repo_id is not None:
        stmt = stmt.where(tasks.c.repo_id == repo_id)
    rows = conn.execute(stmt).all()
    ids = [
        job_id
        for job_id, job_reasons, task_reasons in rows
        if any(said in str(r) for r in [*(job_reasons or []), *(task_reasons or [])])
    ]
    if ids:
        conn.execute(sa.update(jobs).where(jobs.c.id.in_(ids)).values(not_before=now))
        wake.notify(conn, "job-queued")
    return len(ids)


def repo_of_job(conn: sa.Connection, job_id: int) -> str:
    """The repo name of a job's task."""
    stmt = (
        sa.select(repos.c.name)
        .select_from(jobs.join(tasks, tasks.c.id == jobs.c.task_id).join(repos))
        .where(jobs.c.id == job_id)
    )
    return str(conn.execute(stmt).scalar_one())


_RECORDED = sa.select(jobs.c.artifacts).where(
    jobs.c.task_id == sa.bindparam("task_id"), jobs.c.artifacts.is_not(None)
)


def recorded_artifacts(conn: sa.Connection, task_id: int) -> dict[str, set[str]]:
    """{artifact name: the SHA-256s any job of the task recorded for it}: what the pipeline
    itself wrote into the task folder."""
    rows = conn.execute(_RECORDED, {"task_id": task_id})
    found: dict[str, set[str]] = {}
    for (recorded,) in rows:
        for name, digest in (recorded or {}).items():
            found.setdefault(str(name), set()).add(str(digest))
    return found


def record_artifacts(conn: sa.Connection, job_id: int, artifacts: Mapping[str, str]) -> None:
    """Record {name: SHA-256} for a job before it runs (a human's approval supplies the
    stage's artifact: the pipeline wrote it, on the human's word)."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(artifacts=dict(artifacts)))
