"""Apply the end of a job in ONE transaction: finish it, move the task, record, queue next.

The decision is ``domain.decide``'s; here it is only stored, beside the two things a
decision cannot do without I/O: the model backend's breaker (``store.breakers``) and the
spend just recorded (``store.spend``), both read in the same transaction.

A crash leaves either the old state (the job still running under a dead lease, to be
re-queued) or the whole new one; never a finished job without its transition, or a
transition without its next job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.agents.common import MAX_TOKENS, as_cost
from orchestrator.alerts import raise_alert, store_breaker_change
from orchestrator.config import Settings
from orchestrator.domain import breaker
from orchestrator.domain.decide import (
    BackendWait,
    JobEnd,
    JobRecord,
    SpendFigures,
    decide_job_end,
    job_record,
)
from orchestrator.domain.faults import FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import Budgets, Stage, State, TaskView, Transition
from orchestrator.domain.verdicts import Verdict
from orchestrator.engine.queue import ClaimNext, queue_next
from orchestrator.jobcontract import JobResult
from orchestrator.store import breakers, queries, spend, wake
from orchestrator.store import jobs as jobq
from orchestrator.store.history import record_transition
from orchestrator.store.rows import AlertRow, JobRow, RepoRow, TaskRow


@dataclass(frozen=True)
class Applied:
    """What applying a job's end did."""

    transition: Transition | None
    # Alerts to deliver: raised or reopened by this job's end (see alerts.raise_alert).
    alerts: list[AlertRow] = field(default_factory=list)
    next_job: JobRow | None = None
    # Our lease was gone (another worker took the job over): nothing was written.
    fenced_out: bool = False
    # The next job, claimed with this end by ``claim_next``, and its task and repo as this
    # transaction left them: the worker runs it without reading them again.
    following: JobRow | None = None
    task: TaskRow | None = None
    repo: RepoRow | None = None
    # Whether this end made room for other jobs (a slot, a serial gate): what a worker's
    # loop must be woken for. Not when the next job took the slot and the gate over.
    freed: bool = True


def budgets_for(settings: Settings, stage: Stage, agent: str) -> Budgets:
    """The budgets in force for a job of ``agent`` at ``stage``."""
    infra = settings.infra_retry_budget
    if stage is Stage.DEPLOY_STAGING and agent == "staging-runner":
        infra = settings.staging_runner_infra_retry_budget
    return Budgets(
        developer_retry_budget=settings.developer_retry_budget,
        infra_retry_budget=infra,
        infra_retry_backoff_s=settings.infra_retry_backoff_s,
        gate_retry_budget=settings.merge_gate_infra_retry_budget,
        gate_retry_backoff_s=settings.merge_gate_infra_retry_backoff_s,
    )


def _refusal_alert(result: JobResult) -> str | None:
    """The alert of a job refused before dispatch, or None when it was not refused."""
    if result.over_budget:
        return "llm-budget-exhausted"
    if result.sandbox_missing:
        return "sandbox-unavailable"
    return None


def _backend_end(
    conn: sa.Connection,
    settings: Settings,
    backend: str | None,
    job: JobRow,
    result: JobResult,
    now: float,
    raised: list[AlertRow],
) -> BackendWait | None:
    """Tell the backend's breaker how the job ended; how long to wait, and why, when the job
    must wait for the backend instead of being charged to its task, else None. An alert the
    change raises (the outage began, the credentials were rejected, it ended) goes into
    ``raised``."""
    if backend is None or result.over_budget or result.sandbox_missing:
        return None
    if result.outcome is OutcomeKind.NOT_STARTED and result.api_fault is None:
        return None
    breakers.lock_spend(conn)
    row = breakers.get(conn, backend)
    answered = result.api_fault is None and (
        result.outcome is OutcomeKind.COMPLETED or (result.model_calls or 0) > 0
    )
    change = breaker.on_end(
        row.state if row else None,
        name=backend,
        job_id=job.id,
        answered=answered,
        fault=result.api_fault,
        now=now,
        policy=breaker.BreakerPolicy(
            settings.backend_breaker_threshold,
            settings.backend_probe_first_s,
            settings.backend_probe_max_s,
        ),
    )
    alert = store_breaker_change(
        conn,
        row,
        change,
        now=now,
        kinds={event: event.value for event in breaker.Event},
        messages={
            breaker.Event.OPENED: f"model backend {backend} is failing: paused",
            breaker.Event.CREDENTIALS: f"credentials rejected for {backend}",
            breaker.Event.RECOVERED: f"model backend {backend} is back",
        },
    )
    if alert is not None:
        raised.append(alert)
    if change.wait_until is None:
        return None
    return BackendWait(change.wait_until - now, tuple(change.reasons))


def job_end(job: JobRow, result: JobResult, verdict: Verdict | None) -> JobEnd:
    """The value the decision reads: how ``job`` ended, as its result and verdict say."""
    fault = result.api_fault
    return JobEnd(
        Stage(job.stage),
        job.agent,
        result.outcome,
        tuple(result.reasons),
        verdict,
        result.exit_code,
        refusal=_refusal_alert(result),
        awaiting_human=result.awaiting_human,
        request_refused=fault is not None and fault.kind is FaultKind.REQUEST,
        cost_usd=result.cost_usd,
    )


def unstorable_end(result: JobResult, exc: BaseException) -> JobResult:
    """The end stored in place of ``result`` when the store refused it for good (not a
    database gone for a while): a crash whose reason says so, holding nothing the job
    produced (no reason, no artifact record, no verdict), so that it cannot be refused
    again. Its spend is kept as the CLIs' parsers keep it: a count or a cost beyond the
    most one can be as that most (the safe side of a budget), a cost that is no amount
    as unknown.

    The exception is named by its type only: its text may quote the value refused.
    """
    return JobResult(
        OutcomeKind.CRASHED,
        [
            f"this job's end could not be stored ({type(exc).__name__}): recorded as a "
            "crash, without its reasons and artifacts; its log has what it printed"
        ],
        worktree=result.worktree,
        cost_usd=as_cost(result.cost_usd),
        tokens_in=_storable_count(result.tokens_in),
        tokens_out=_storable_count(result.tokens_out),
    )


def _storable_count(value: int | None) -> int | None:
    return None if value is None else min(max(value, 0), MAX_TOKENS)


def apply_job_end(
    conn: sa.Connection,
    *,
    settings: Settings,
    job: JobRow,
    owner: str,
    result: JobResult,
    verdict: Verdict | None,
    now: float,
    backend: str | None = None,
    claim_next: ClaimNext | None = None,
) -> Applied:
    """Finish ``job`` and store the move ``domain.decide`` picks; must run inside the
    caller's transaction.

    ``backend``: the LLM backend the job called (None: none); its breaker learns how the
    job ended, and a paused backend makes the job wait instead of charging its task.
    ``claim_next``: claim the job the move queues, in this transaction (see ``ClaimNext``).
    """
    found = queries.get_task_and_repo(conn, job.task_id)
    if found is None:
        msg = f"job {job.id} names task {job.task_id}, which does not exist"
        raise LookupError(msg)
    task, repo = found
    end = job_end(job, result, verdict)

    def finish(record: JobRecord) -> bool:
        # Fenced by the lease owner; spend is kept whatever the decision (a cancelled LLM
        # job cost money too).
        return jobq.finish_job(
            conn,
            job.id,
            owner,
            now=now,
            outcome=record.outcome.value,
            verdict=record.verdict,
            reasons=record.reasons,
            exit_code=record.exit_code,
            cost_usd=result.cost_usd,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            earlier=job.reasons,
            artifacts=taskdir.record_of(result.artifacts, result.refused_artifacts),
            # Told below, once it is known whether the next job takes the slot.
            notify=claim_next is None,
        )

    if task.state == State.CANCELLED:
        fenced_out = not finish(job_record(end, cancelled=True))
        if claim_next is not None and not fenced_out:
            wake.notify(conn, "job-finished")
        return Applied(None, fenced_out=fenced_out)

    # Alerts of the backend (its outage began or ended), raised with this job's end.
    backend_alerts: list[AlertRow] = []
    if end.tells_breaker:
        wait = _backend_end(conn, settings, backend, job, result, now, backend_alerts)
        end = dataclasses.replace(end, backend_wait=wait)
    if not finish(job_record(end)):
        return Applied(None, fenced_out=True)
    figures = None
    if result.cost_usd is not None:
        # The job's spend is recorded now: the decision sees whether it crossed a budget.
        figures = SpendFigures(
            task_spent_usd=spend.task_spend_usd(conn, task.id),
            day_spent_usd=spend.day_spend_usd(conn, since=now - spend.DAY_S),
            task_budget_usd=settings.llm_budget_per_task_usd,
            day_budget_usd=settings.llm_budget_per_day_usd,
        )
    view = TaskView(
        task.key,
        tuple(Stage(s) for s in repo.stages),
        developer_retries=task.developer_retries,
        infra_retries=task.infra_retries,
        gate_retries=task.gate_retries,
    )
    move = decide_job_end(view, end, budgets_for(settings, end.stage, job.agent), figures)
    fresh = record_transition(conn, task, move, actor="engine", now=now, job_id=job.id)
    next_job = following = None
    if move.next_job is not None:
        next_job = queue_next(conn, repo, fresh, move.next_job, now=now, notify=claim_next is None)
        if claim_next is not None:
            # The job just finished was ours (the fence): its serial key is this
            # transaction's to hand on.
            following = claim_next(conn, next_job, fresh, repo, job.serial_key)
            if following is not None and fresh.state == State.DEFERRED:
                # The claim made the task active again, as any claim of its job does.
                fresh = dataclasses.replace(fresh, state=State.ACTIVE.value)
    # What other workers (and this one's loop) are told: a free slot or serial gate, a
    # job to claim. Nothing when the next job took the slot, and the gate with it.
    freed = following is None or (
        job.serial_key is not None and following.serial_key != job.serial_key
    )
    if claim_next is not None:
        if freed:
            wake.notify(conn, "job-finished")
        if next_job is not None and following is None:
            wake.notify(conn, "job-queued")
    alerts: list[AlertRow] = list(backend_alerts)
    if move.alert is not None:
        # Where to look first: the log of the job whose end raised it.
        log = taskdir.run_log_path(
            taskdir.task_dir(settings.tasks_dir, task.key), job.id, job.stage, job.agent
        )
        where = f"log: {log}" if log.exists() else f"log: none (job {job.id} wrote no log)"
        task_alert = raise_alert(
            conn,
            kind=move.alert,
            message=f"{task.key} {move.kind} at {job.stage}",
            reasons=[*move.reasons, where],
            now=now,
            task_id=task.id,
            repo_id=repo.id,
        )
        # Only news is delivered: a repeat of an open alert was delivered already.
        if task_alert.new:
            alerts.append(task_alert.alert)
    return Applied(
        move.transition, alerts, next_job, following=following, task=fresh, repo=repo, freed=freed
    )
