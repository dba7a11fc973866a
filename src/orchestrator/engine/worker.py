"""The scheduler loop: claim jobs under leases, run them, apply their ends, recover.

One ``Worker`` per process (``orch run``, ``orch worker``, later ``orch serve``). Jobs run in
threads that wait on their process groups; the loop itself only claims, heartbeats,
watches for cancels and the reaper, and sleeps on an Event that a finishing job or a new
task sets. On PostgreSQL a LISTEN/NOTIFY listener sets it too when another process queues
or ends a job; changes are also noticed by a cheap poll (``poll_interval_s``), the only way
on SQLite and the fallback on PostgreSQL. A database that is gone for a while is waited
out: the loop and each job's bookkeeping try again until it answers.

It stays one module of some 600 lines because it is one concept: the loop and the
threads it owns share its state (the running jobs, their cancel events and stop reasons,
the stop and drain flags), and a job's life on a thread (read, admit, launch, gate, apply,
follow the task) is the loop's other half. What could stand alone has moved out: LLM
admission (``engine.admission``), recovery (``engine.recovery``), waiting out the database
(``engine.outage``), the decision (``domain.decide``) and storing it (``engine.apply``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from orchestrator import alerts, forge_notes, taskdir
from orchestrator.agents.prompts import previous_failure
from orchestrator.config import Settings
from orchestrator.domain import artifacts as A
from orchestrator.domain.decide import reaped
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import SERIAL_HOLD_STAGES, Stage, State
from orchestrator.domain.verdicts import Verdict
from orchestrator.engine.admission import Admitted, admit_llm
from orchestrator.engine.apply import Applied, apply_job_end, unstorable_end
from orchestrator.engine.launch import launch_job, llm_backend_of
from orchestrator.engine.outage import Outage, until_db_answers
from orchestrator.engine.queue import follow_claim
from orchestrator.engine.recovery import make_worker_id, prune_worktrees, recover_jobs
from orchestrator.gates.context import GateContext
from orchestrator.gates.registry import run_after_pass, run_gates
from orchestrator.gitops import worktrees
from orchestrator.jobcontract import JobContext, JobResult, job_marker
from orchestrator.private_files import private_dir
from orchestrator.store import control, is_transient, queries
from orchestrator.store import jobs as jobq
from orchestrator.store.db import reader
from orchestrator.store.rows import JobRow, RepoRow, TaskRow
from orchestrator.store.wake import WakeListener

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# How much of an exception's text a crash's reason keeps.
_MAX_ERROR_CHARS = 500

# How often running jobs are checked for a cancel asked in the DB, and for the reaper: a
# cancelled job is killed well within a second.
WATCH_INTERVAL_S = 0.25


@dataclass
class _Running:
    job: JobRow
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    stop_reason: str | None = None


@dataclass(frozen=True)
class _Follow:
    """A task's next job, claimed with its previous job's end: run by the same thread,
    with the task and repo that end's transaction read and wrote."""

    job: JobRow
    task: TaskRow
    repo: RepoRow
    # The previous end made room for other jobs too (a serial gate): wake the loop.
    wake_loop: bool


class Worker:
    """Claims and runs jobs until stopped (or, with ``until_idle``, until nothing can move)."""

    def __init__(self, settings: Settings, engine: sa.Engine, *, name: str = "worker") -> None:
        self.settings = settings
        self.engine = engine
        # Reads that write nothing begin DEFERRED on SQLite: they never queue for the write
        # lock behind a job's end or a claim (store.db.reader).
        self.reads = reader(engine)
        self.name = name
        self.host = socket.gethostname()
        self.started = time.time()
        self.id = make_worker_id(self.host, os.getpid(), self.started)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.drain = False
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self.jobs_finished = 0
        self._started_up = False
        self.listener: WakeListener | None = None
        self._last_heartbeat = 0.0
        self._last_recovery = 0.0
        self._last_watch = 0.0
        self._last_claim = 0.0
        self._next_due: float | None = None

    # ---- the loop -----------------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> None:
        """The scheduler loop. It outlives a database that is gone for a while."""
        outage = Outage("scheduler loop")
        listener = self._listen()
        woken = True
        try:
            while not self.stopping.is_set():
                try:
                    idle, sleep_s = self._tick(woken=woken, until_idle=until_idle)
                except sa.exc.SQLAlchemyError as exc:
                    if not is_transient(exc):
                        raise
                    outage.failed(exc)
                    self.stopping.wait(outage.delay_s)
                    continue
                outage.ok()
                if idle:
                    break
                woken = self.wake.wait(sleep_s)
                self.wake.clear()
        finally:
            # Also when the loop dies of a bug: running jobs are stopped and re-queued, so
            # their processes do not outlive the worker.
            self._shutdown()
            if listener is not None:
                listener.stop()

    def _listen(self) -> WakeListener | None:
        """On PostgreSQL, wake this loop whenever another process queues or ends a job."""
        if self.engine.dialect.name != "postgresql" or not self.settings.db_listen_enabled:
            return None
        listener = WakeListener(self.engine.url, lambda _why: self.wake.set())
        listener.start()
        self.listener = listener
        return listener

    def _tick(self, *, woken: bool, until_idle: bool) -> tuple[bool, float]:
        """One turn of the loop: (nothing can move?, how long to sleep).

        Each duty has its own interval: heartbeats, recovery, the look for cancels (only
        while jobs run) and the claim, which runs when something woke the loop, when the
        poll interval has passed, or when a deferred job falls due.
        """
        st = self.settings
        if not self._started_up:
            self.recover()
            self.prune_worktrees()
            self._started_up = True
            self._last_recovery = time.time()
        now = time.time()
        if now - self._last_heartbeat >= st.heartbeat_interval_s:
            self._heartbeat(now)
            self._last_heartbeat = now
        if now - self._last_recovery >= st.job_lease_s / 2:
            self.recover(startup=False)
            self._last_recovery = now
        if now - self._last_watch >= WATCH_INTERVAL_S:
            self._watch_running(now)
            self._last_watch = now
        due = self._next_due is not None and self._next_due <= now
        if woken or due or now - self._last_claim >= st.poll_interval_s:
            looked = self._claim()
            self._last_claim = now
            if looked:
                with self.reads.connect() as conn:
                    self._next_due = jobq.next_wakeup(conn, after=time.time())
            else:
                # Every slot is taken: nothing can be claimed, due or not, until a job's end
                # frees one, and that end wakes the loop (and the claim then looks again).
                # A due time kept from before would only make the loop spin.
                self._next_due = None
        if until_idle and self._idle():
            return True, 0.0
        return False, self._sleep_for()

    def stop(self, *, drain: bool = False) -> None:
        """Stop claiming; with ``drain`` wait for running jobs, else kill and re-queue them."""
        self.drain = drain
        self.stopping.set()
        self.wake.set()

    def _sleep_for(self) -> float:
        """Until the first duty of the loop falls due; a wake-up cuts it short.

        The next poll, a deferred job's ``not_before``, the next heartbeat (a long poll
        must not cost running jobs their leases) and, while jobs run, the next look for
        cancels and the reaper. Jobs already due that were not claimed are waiting for room
        (a limit or the serial gate): a job ending wakes the loop for them, so they must
        not make it spin.
        """
        st = self.settings
        at = [self._last_claim + st.poll_interval_s, self._last_heartbeat + st.heartbeat_interval_s]
        if self._next_due is not None:
            at.append(self._next_due + 0.01)
        with self._lock:
            if self._running:
                at.append(self._last_watch + WATCH_INTERVAL_S)
        return max(min(at) - time.time(), 0.01)

    def _idle(self) -> bool:
        with self._lock:
            if self._running:
                return False
        with self.reads.connect() as conn:
            return not control.work_pending(conn)

    def _claim(self) -> bool:
        """Claim what there is room for; False when there was no room to look for any."""
        st = self.settings
        with self._lock:
            room = st.max_parallel_jobs - len(self._running)
        if room <= 0:
            return False
        with self.engine.begin() as conn:
            claimed = self._claim_in(conn, max_jobs=room)
        for job in claimed:
            thread = threading.Thread(
                target=self._job_thread, args=(job,), name=f"job-{job.id}", daemon=True
            )
            with self._lock:
                self._running[job.id] = _Running(job, thread)
            thread.start()
        return True

    def _paused(self, conn: sa.Connection) -> bool:
        # `orch pause` is read where it matters: in the claim's own transaction.
        return self.settings.paused or control.is_paused(conn)

    def _claim_in(
        self, conn: sa.Connection, *, max_jobs: int, task_id: int | None = None
    ) -> list[JobRow]:
        """Claim within the caller's transaction, unless paused."""
        st = self.settings
        if self._paused(conn):
            return []
        # The clock is read inside the transaction: on SQLite BEGIN IMMEDIATE may have
        # waited for another worker, and started_at must not predate the claim.
        return jobq.claim_jobs(
            conn,
            owner=self.id,
            host=self.host,
            now=time.time(),
            lease_s=st.job_lease_s,
            limits=jobq.ClaimLimits(st.max_parallel_jobs, st.max_parallel_jobs_per_repo),
            max_jobs=max_jobs,
            task_id=task_id,
            hold_stages=SERIAL_HOLD_STAGES,
        )

    def _heartbeat(self, now: float) -> None:
        with self._lock:
            mine = dict(self._running)
        with self.engine.begin() as conn:
            taken = jobq.heartbeat(
                conn, self.id, now=now, lease_s=self.settings.job_lease_s, job_ids=list(mine)
            )
            control.worker_heartbeat(
                conn,
                self.id,
                name=self.name,
                host=self.host,
                pid=os.getpid(),
                started_at=self.started,
                now=now,
            )
        for job_id in taken:
            r = mine[job_id]
            if not r.cancel.is_set():
                # Our lease ran out (the database was gone longer than job_lease_s, or this
                # process stalled) and another worker took the job over: it runs there now,
                # so this copy is stopped rather than left running twice.
                log.warning(
                    "lost the lease of a running job; stopping it here",
                    extra={"job": job_id, "action": "lease-lost"},
                )
                r.stop_reason = "lease-lost"
                r.cancel.set()

    def _watch_running(self, now: float) -> None:
        """Cancels asked for in the DB, and the reaper, for this worker's jobs."""
        with self._lock:
            running = list(self._running.values())
        if not running:
            return
        with self.reads.connect() as conn:
            cancelled = set(control.cancel_requested(conn, [r.job.id for r in running]))
        for r in running:
            if r.job.id in cancelled and not r.cancel.is_set():
                r.stop_reason = "cancel"
                r.cancel.set()
            elif now - r.started > self.settings.reaper_max_running_s and not r.cancel.is_set():
                log.warning("reaper: killing job", extra={"job": r.job.id, "action": "reap"})
                r.stop_reason = "reaper"
                r.cancel.set()

    # ---- one job ------------------------------------------------------------------------

    def _job_thread(self, job: JobRow) -> None:
        """Run a job; then the job claimed with its end, if any, in the same thread."""
        current: JobRow | None = job
        known: tuple[TaskRow, RepoRow] | None = None
        while current is not None:
            with self._lock:
                running = self._running[current.id]
            following: _Follow | None = None
            try:
                if self.stopping.is_set() and not self.drain:
                    self._requeue(current, "worker stopped before the job started")
                else:
                    following = self._run_one(current, running, known)
            except Exception as exc:
                log.exception("job thread failed", extra={"job": current.id})
                self._end_failed(current, exc)
            finally:
                with self._lock:
                    self._running.pop(current.id, None)
                    if following is not None:
                        self._running[following.job.id] = _Running(following.job, running.thread)
                self.jobs_finished += 1
                # The loop claims for a freed slot or serial gate. A next job that took the
                # slot over leaves nothing to claim: waking the loop would only make it
                # read the queue (and on SQLite queue for the write lock) while that job
                # starts.
                if following is None or following.wake_loop:
                    self.wake.set()
            if following is None:
                current, known = None, None
            else:
                current, known = following.job, (following.task, following.repo)

    def _end_failed(self, job: JobRow, exc: Exception) -> None:
        """End a job whose thread raised (a bug of ours, or the machine's: a task folder
        the worker cannot write) as a crash that names the exception, so that the task's
        infra budget bounds it. Left to its lease, recovery re-queued it without spending
        anything and it failed the same way again, for ever.

        Fenced as every end is: a job that had its end already (the exception came after
        it), or that another worker owns now, is left as it is. A worker that stops
        without draining leaves it to recovery, as it leaves every running job. No process
        of the job is left to stop: ``launch_job`` returns only once its process is gone.
        """
        if self.stopping.is_set() and not self.drain:
            return
        what = f"internal error in the worker ({type(exc).__name__}): {exc}"
        crash = JobResult(OutcomeKind.CRASHED, [what[:_MAX_ERROR_CHARS]])
        try:
            applied = self._apply(job, crash, None, follow=False)
        except Exception:
            log.exception("could not end the failed job", extra={"job": job.id})
            return
        self._announce(applied, applied.task)

    def _announce(self, applied: Applied, task: TaskRow | None) -> None:
        """Deliver the alerts a job's end raised, and tell the task's forge issue its move."""
        if applied.alerts:
            alerts.deliver_in_background(
                self.engine, applied.alerts, self.settings.alert_webhook_url
            )
        if task is not None:
            forge_notes.notify_in_background(
                self.engine, task.id, task.key, task.forge_issue, applied.transition
            )

    def _until_db_answers(self, what: str, job: int, fn: Callable[[], _T]) -> _T:
        """``fn()``, tried again while the database is unreachable (``engine.outage``);
        gives up only when the worker stops without draining."""
        return until_db_answers(
            what, job, fn, give_up=lambda: self.stopping.is_set() and not self.drain
        )

    def _admit_llm(self, job: JobRow, task_id: int, backend: str) -> Admitted:
        return admit_llm(self.engine, self.settings, job, task_id, backend, owner=self.id)

    def _requeue(self, job: JobRow, reason: str) -> None:
        def write() -> None:
            with self.engine.begin() as conn:
                jobq.requeue(
                    conn,
                    job.id,
                    now=time.time(),
                    owner=self.id,
                    reason=f"{reason}; re-queued without spending a retry",
                )

        self._until_db_answers("re-queue a job", job.id, write)

    def _run_one(
        self, job: JobRow, running: _Running, known: tuple[TaskRow, RepoRow] | None = None
    ) -> _Follow | None:
        """Run one job to its applied end; returns a next job claimed in the same breath.

        ``known``: the task and repo as the transaction that claimed the job left them (a
        task's next job), else they are read here."""
        st = self.settings

        def read() -> tuple[TaskRow, RepoRow, str | None]:
            with self.reads.connect() as conn:
                if known is not None:
                    task, repo = known
                else:
                    found = queries.get_task_and_repo(conn, job.task_id)
                    if found is None:
                        msg = f"claimed job {job.id} names task {job.task_id}, which is gone"
                        raise LookupError(msg)
                    task, repo = found
                return task, repo, previous_failure(conn, job, st.tasks_dir / task.key)

        if known is not None and (job.stage != Stage.DEVELOPMENT.value or job.attempt <= 1):
            # Only a development attempt after a rollback reads its history.
            task, repo, previous = known[0], known[1], None
        else:
            task, repo, previous = self._until_db_answers("read a claimed job", job.id, read)
        folder = taskdir.task_dir(st.tasks_dir, task.key)
        log_path = taskdir.run_log_path(folder, job.id, job.stage, job.agent)
        private_dir(log_path.parent)

        def on_start(pid: int, pgid: int) -> None:
            try:
                with self.engine.begin() as conn:
                    jobq.record_process(
                        conn, job.id, self.id, pid=pid, pgid=pgid, log_path=str(log_path)
                    )
            except sa.exc.SQLAlchemyError as exc:
                if not is_transient(exc):
                    raise
                # The pgid registry is a help, not the only way back: recovery also finds
                # the job's processes by their marker. Not worth killing a started job for.
                log.warning(
                    "could not record the job's process group: %s",
                    type(exc).__name__,
                    extra={"job": job.id, "action": "db-down"},
                )

        ctx = JobContext(job, task, repo, st, folder, log_path, running.cancel, on_start, previous)
        backend = llm_backend_of(job, repo, st)
        if backend is not None:
            admitted = self._until_db_answers(
                "admit an LLM job", job.id, lambda: self._admit_llm(job, task.id, backend)
            )
            if admitted.waiting:
                return None
            if admitted.refusal is not None:
                refused = JobResult(
                    OutcomeKind.COMPLETED, admitted.refusal, None, None, over_budget=True
                )
                applied = self._apply(job, refused, None, follow=False)
                self._announce(applied, None)
                return None
            ctx = dataclasses.replace(
                ctx, task_left_usd=admitted.task_left_usd, spend_cap_usd=admitted.cap_usd
            )
        result = launch_job(ctx)
        if running.stop_reason == "shutdown":
            self._requeue(job, "worker stopped")
            return None
        if running.stop_reason == "lease-lost":
            # Another worker owns the job now; anything written here would be fenced out.
            return None
        if running.stop_reason == "reaper":
            outcome, reasons = reaped(result.reasons, st.reaper_max_running_s)
            result = dataclasses.replace(result, outcome=outcome, reasons=list(reasons))
        verdict = None
        if result.outcome is OutcomeKind.COMPLETED and not result.awaiting_human:
            # Read only if a check reads an artifact this job did not produce (a gate-only
            # retry, an approval): a job's own artifacts come from memory.
            recorded = _Records(
                lambda: self._until_db_answers(
                    "read the artifacts' records",
                    job.id,
                    lambda: _recorded_artifacts(self.engine, task.id),
                )
            )
            gates = GateContext(
                task,
                repo,
                Stage(job.stage),
                folder,
                result.worktree,
                st,
                self.engine,
                cancel=running.cancel,
                job_id=job.id,
                on_start=on_start,
                marker=job_marker(job),
                produced=result.artifacts,
                recorded=recorded,
                branch_diff=result.branch_diff,
            )
            verdict = run_gates(gates)
            # The job's record of what it put in the task folder: its own artifacts and
            # the gates' reports (an artifact no job recorded is never read or shown as a
            # result).
            result = dataclasses.replace(result, artifacts={**result.artifacts, **gates.written})
            if running.stop_reason in ("shutdown", "lease-lost"):
                # Stopped while a gate ran a process (the merge re-test): as for the job's
                # own process, re-queue it, or leave it to the worker that owns it now.
                if running.stop_reason == "shutdown":
                    self._requeue(job, "worker stopped")
                return None
            if verdict.passed:
                # What the stage declares after a PASS (testing: record the validated tree),
                # each step only on the word of the deterministic agent it trusts.
                notes = run_after_pass(
                    gates, agent=job.agent, llm_backend=backend, passed_tests=result.passed_tests
                )
                for note in notes:
                    log.info(note, extra={"task": task.key, "job": job.id, "action": "after-pass"})
        applied = self._apply(job, result, verdict, follow=True, backend=backend)
        if applied.fenced_out:
            log.warning("lost the lease; another worker owns the job now", extra={"job": job.id})
            return None
        self._announce(applied, task)
        t = applied.transition
        log.info(
            "%s %s: %s",
            task.key,
            job.stage,
            t.kind.value if t else "cancelled",
            extra={"task": task.key, "job": job.id, "action": t.kind.value if t else "cancel"},
        )
        if t is None or t.to_state in (State.DONE, State.CANCELLED):
            worktrees.remove_worktree(
                Path(repo.path),
                st.worktrees_dir,
                repo.name,
                task.key,
                # Only a done task's branch is on main; a cancelled one may hold work.
                merged_into=repo.main_branch
                if t is not None
                and t.to_state == State.DONE
                and not repo.options.get("keep_branches")
                else None,
            )
        nxt = applied.following
        if nxt is None or applied.task is None or applied.repo is None:
            return None
        return _Follow(nxt, applied.task, applied.repo, wake_loop=applied.freed)

    def _apply(
        self,
        job: JobRow,
        result: JobResult,
        verdict: Verdict | None,
        *,
        follow: bool,
        backend: str | None = None,
    ) -> Applied:
        """Apply the job's end in one transaction, tried again while the database is gone.

        A try that failed rolled back whole, so the next one starts from the same state;
        a commit that did happen before the connection dropped makes the next try a no-op,
        since ``finish_job`` is fenced on the job still running. An end the store refuses
        for good is stored once as ``unstorable_end`` makes it, never tried again.
        """

        st = self.settings
        # Follow the task through its pipeline: its next job, if due now, is claimed in the
        # same transaction, so the slot is refilled without a wake-up round trip. Only this
        # task's job: other tasks are left to every worker's claim, so one worker's chains
        # never starve the others.
        claim_next = follow_claim(
            owner=self.id,
            host=self.host,
            lease_s=st.job_lease_s,
            limits=jobq.ClaimLimits(st.max_parallel_jobs, st.max_parallel_jobs_per_repo),
            hold_stages=SERIAL_HOLD_STAGES,
            # `orch pause` is read by the claim itself, with the limits.
            refuse=lambda: self.stopping.is_set() or st.paused,
        )

        def once(result: JobResult, verdict: Verdict | None, backend: str | None) -> Applied:
            with self.engine.begin() as conn:
                return apply_job_end(
                    conn,
                    settings=self.settings,
                    job=job,
                    owner=self.id,
                    result=result,
                    verdict=verdict,
                    now=time.time(),
                    backend=backend,
                    claim_next=claim_next if follow else None,
                )

        try:
            return self._until_db_answers(
                "apply a job's end", job.id, lambda: once(result, verdict, backend)
            )
        except Exception as exc:
            if isinstance(exc, sa.exc.SQLAlchemyError) and is_transient(exc):
                raise  # the worker stops: recovery re-queues the job, its end not lost
            # Refused for good (a value no column holds: a DataError on PostgreSQL, an
            # OverflowError or UnicodeEncodeError from the driver): tried again, or left to
            # recovery, it would be refused again and again and the job never end. It ends
            # once as a crash that says so, holding nothing of the job's own; the task's
            # infra budget bounds how often that can happen. A second refusal is a bug of
            # ours, not the job's: raised, as any.
            log.exception(
                "the job's end could not be stored; recording it as a crash",
                extra={"job": job.id, "action": "unstorable-end"},
            )
            crash = unstorable_end(result, exc)
        return self._until_db_answers("apply a job's end", job.id, lambda: once(crash, None, None))

    # ---- recovery and shutdown ----------------------------------------------------------

    def prune_worktrees(self) -> list[str]:
        """Remove worktrees of tasks that no longer exist or have ended (done, cancelled);
        blocked tasks keep theirs: a human may want to look."""
        return prune_worktrees(self.engine, self.settings)

    def recover(self, *, startup: bool = True) -> int:
        """Re-queue jobs whose worker is gone, killing what is left of them on this host
        (``engine.recovery.recover_jobs``); no retry is spent."""
        del startup
        with self._lock:
            mine = set(self._running)
        return recover_jobs(self.engine, self.settings, self.host, self.id, mine)

    def _shutdown(self) -> None:
        with self._lock:
            running = list(self._running.values())
        if not self.drain:
            for r in running:
                r.stop_reason = "shutdown"
                r.cancel.set()
        for r in running:
            r.thread.join()
        try:
            with self.engine.begin() as conn:
                control.worker_gone(conn, self.id)
        except sa.exc.SQLAlchemyError as exc:
            # Only the workers list is left stale; its heartbeat time tells it is gone.
            log.warning("could not remove this worker from the list: %s", type(exc).__name__)


class _Records(Mapping[str, set[str]]):
    """The task's artifact records (``GateContext.recorded``), read on first use."""

    def __init__(self, load: Callable[[], dict[str, set[str]]]) -> None:
        self._load = load
        self._read: dict[str, set[str]] | None = None

    def _records(self) -> dict[str, set[str]]:
        if self._read is None:
            self._read = self._load()
        return self._read

    def __getitem__(self, name: str) -> set[str]:
        return self._records()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records())

    def __len__(self) -> int:
        return len(self._records())


def _recorded_artifacts(engine: sa.Engine, task_id: int) -> dict[str, set[str]]:
    with reader(engine).connect() as conn:
        return jobq.recorded_artifacts(conn, task_id)


__all__ = ["A", "Worker"]
