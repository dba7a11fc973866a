"""Taking back what a gone worker left: its jobs, its processes, its worktrees.

A worker's id names its host and process (``make_worker_id``), so a worker on the same
host can tell a dead owner at once instead of waiting for its lease to expire. Recovery
re-queues such jobs without spending a retry (infra trouble of ours is never the code's
fault) after killing what is left of them on this host.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Set
from pathlib import Path

import sqlalchemy as sa

from orchestrator import proc_group
from orchestrator.config import Settings
from orchestrator.domain.stages import State
from orchestrator.gitops import worktrees
from orchestrator.jobcontract import job_marker
from orchestrator.store import jobs as jobq
from orchestrator.store import queries

__all__ = ["make_worker_id", "parse_worker_id", "prune_worktrees", "recover_jobs"]

log = logging.getLogger(__name__)


def make_worker_id(host: str, pid: int, started: float) -> str:
    """``host:pid:start-ms``: unique per process start, and names the host it runs on."""
    return f"{host}:{pid}:{int(started * 1000)}"


def parse_worker_id(worker_id: str) -> tuple[str, int | None]:
    """(host, pid) of a worker id; pid None when it cannot be read."""
    head, _, _started = worker_id.rpartition(":")
    host, _, pid = head.rpartition(":")
    try:
        return host, int(pid)
    except ValueError:
        return host, None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_jobs(
    engine: sa.Engine, settings: Settings, host: str, worker_id: str, mine: Set[int]
) -> int:
    """Re-queue jobs whose worker is gone, killing what is left of them on ``host``.

    A job is taken back when its lease expired, or (at once, on this host) when the
    worker that owns it is a dead process. ``mine``: the jobs this worker's threads run.
    How many were taken back.
    """
    now = time.time()
    with engine.connect() as conn:
        candidates = {j.id: j for j in jobq.expired_leases(conn, now=now)}
        for j in jobq.running_on_host(conn, host):
            candidates.setdefault(j.id, j)
    taken = 0
    for job in candidates.values():
        owner = job.lease_owner or ""
        if owner == worker_id and job.id in mine:
            continue
        # A job of ours that no thread runs any more (it gave up while the database
        # was gone) is no longer heartbeated: it is taken back once its lease expires.
        owner_host, owner_pid = parse_worker_id(owner)
        expired = job.lease_expires_at is not None and job.lease_expires_at < now
        dead_here = owner_host == host and (owner_pid is None or not _pid_alive(owner_pid))
        if not (expired or dead_here):
            continue
        if job.host == host:
            # Each worker reaps only its own host's leftovers: the pgid registry is per host.
            if job.pgid:
                proc_group.kill_process_group(job.pgid, grace_s=settings.kill_grace_s)
            proc_group.kill_marked(job_marker(job))
        with engine.begin() as conn:
            if jobq.requeue(
                conn,
                job.id,
                now=now,
                reason=f"recovered from {owner or 'no owner'}; no retry spent",
            ):
                taken += 1
    if taken:
        log.warning("recovered %d job(s)", taken, extra={"action": "recover"})
    return taken


def prune_worktrees(engine: sa.Engine, settings: Settings) -> list[str]:
    """Remove worktrees of tasks that no longer exist or have ended (done, cancelled).

    Blocked tasks keep theirs: a human may want to look.
    """
    removed: list[str] = []
    with engine.connect() as conn:
        repos = queries.list_repos(conn)
        live = {
            t.key
            for t in queries.list_tasks(conn)
            if t.state not in (State.DONE.value, State.CANCELLED.value)
        }
    for repo in repos:
        removed += worktrees.prune_orphan_worktrees(
            Path(repo.path), settings.worktrees_dir, repo.name, live
        )
    if removed:
        log.info("pruned %d orphan worktree(s)", len(removed), extra={"action": "prune"})
    return removed
