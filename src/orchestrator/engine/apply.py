"""Apply the end of a job in ONE transaction: finish it, move the task, record, queue next.

A crash leaves either the old state (the job still running under a dead lease, to be
re-queued) or the whole new one; never a finished job without its transition, or a
transition without its next job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import sqlalchemy as sa

from orchestrator import taskdir
from orchestrator.agents.budget import check_budgets
from orchestrator.alerts import raise_alert, resolve_task_alerts
from orchestrator.config import Settings
from orchestrator.domain import breaker
from orchestrator.domain.faults import FaultKind
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import (
    Budgets,
    Stage,
    State,
    TaskView,
    Transition,
    TransitionKind,
    next_transition,
    refused_request,
    wait_for_backend,
)
from orchestrator.domain.verdicts import Verdict
from orchestrator.engine.launch import GATE_ONLY_AGENT
from orchestrator.engine.queue import queue_job
from orchestrator.jobcontract import JobResult
from orchestrator.store import breakers, queries, spend
from orchestrator.store import jobs as jobq
from orchestrator.store.queries import AlertRow, JobRow


@dataclass(frozen=True)
class Applied:
    """What applying a job's end did."""

    transition: Transition | None
    # Alerts to deliver: raised or reopened by this job's end (see alerts.raise_alert).
    alerts: list[AlertRow] = field(default_factory=list)
    next_job: JobRow | None = None
    # Our lease was gone (another worker took the job over): nothing was written.
    fenced_out: bool = False


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


def _fresh_start(t: Transition, verdict: Verdict | None) -> str | None:
    """A branch that no longer rebases onto main starts again from current main, its old
    change carried over: working on the old base would only conflict again."""
    conflict = verdict is not None and verdict.fields.get("merge_status") == "CONFLICT"
    return "carry" if t.kind is TransitionKind.ROLLBACK and conflict else None


def _backend_end(
    conn: sa.Connection,
    settings: Settings,
    backend: str | None,
    job: JobRow,
    result: JobResult,
    now: float,
    raised: list[AlertRow],
) -> tuple[float, list[str]] | None:
    """Tell the backend's breaker how the job ended; (seconds to wait, why) when the job
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
    breakers.save(conn, change.state, now=now)
    if change.event is not None:
        reasons = [*change.reasons, f"last error: {change.state.last_error or '?'}"]
        if change.event is breaker.Event.RECOVERED:
            if row is not None and row.alert_id is not None:
                queries.update_alert(conn, row.alert_id, resolved_at=now)
            # The jobs that wait for the backend may run now, not at the probe after next.
            jobq.wake_waiting(conn, now=now, said=breaker.paused_mark(backend))
            message = f"model backend {backend} is back"
        elif change.event is breaker.Event.CREDENTIALS:
            message = f"credentials rejected for {backend}"
        else:
            message = f"model backend {backend} is failing: paused"
        alert = raise_alert(
            conn, kind=change.event.value, message=message, reasons=reasons, now=now
        )
        raised.append(alert.alert)
        breakers.set_alert(
            conn, backend, None if change.event is breaker.Event.RECOVERED else alert.alert.id
        )
    if change.wait_until is None:
        return None
    return change.wait_until - now, list(change.reasons)


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
) -> Applied:
    """Finish ``job`` and apply the decision; must run inside the caller's transaction.

    ``backend``: the LLM backend the job called (None: none); its breaker learns how the
    job ended, and a paused backend makes the job wait instead of charging its task."""
    task = queries.get_task_by_id(conn, job.task_id)
    assert task is not None
    repo = queries.get_repo_by_id(conn, task.repo_id)
    assert repo is not None
    stage = Stage(job.stage)
    verdict_name = None if verdict is None else verdict.status.value

    def finish(
        outcome: str, reasons: list[str], *, verdict: str | None = None, exit_code: int | None
    ) -> bool:
        # Fenced by the lease owner; spend is kept whatever the decision (a cancelled LLM
        # job cost money too).
        return jobq.finish_job(
            conn,
            job.id,
            owner,
            now=now,
            outcome=outcome,
            verdict=verdict,
            reasons=reasons,
            exit_code=exit_code,
            cost_usd=result.cost_usd,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            earlier=job.reasons,
            artifacts=taskdir.record_of(result.artifacts, result.refused_artifacts),
        )

    if task.state == State.CANCELLED:
        ok = finish(
            result.outcome.value,
            ["task was cancelled", *result.reasons],
            exit_code=result.exit_code,
        )
        return Applied(None, fenced_out=not ok)

    # Alerts of the backend (its outage began or ended), raised with this job's end.
    backend_alerts: list[AlertRow] = []
    refusal = _refusal_alert(result)
    if refusal is not None:
        # Refused before it started: an LLM budget is spent, or untrusted code has no
        # sandbox. Blocked, not deferred: waiting brings neither money nor bubblewrap, and
        # a retry loop would hide the reason.
        if not finish(OutcomeKind.NOT_STARTED.value, list(result.reasons), exit_code=None):
            return Applied(None, fenced_out=True)
        t = Transition(
            TransitionKind.BLOCK,
            stage,
            stage,
            State.BLOCKED,
            [f"{stage.value}: blocked before dispatch", *result.reasons],
            alert=refusal,
        )
    elif result.awaiting_human:
        if not finish(OutcomeKind.COMPLETED.value, list(result.reasons), exit_code=None):
            return Applied(None, fenced_out=True)
        reasons = [f"{stage.value}: awaiting human", *result.reasons]
        t = Transition(
            TransitionKind.BLOCK, stage, stage, State.BLOCKED, reasons, alert="awaiting-human"
        )
    elif (
        paused := _backend_end(conn, settings, backend, job, result, now, backend_alerts)
    ) is not None:
        if not finish(result.outcome.value, list(result.reasons), exit_code=result.exit_code):
            return Applied(None, fenced_out=True)
        wait_s, why = paused
        t = wait_for_backend(stage, wait_s, [*why, *result.reasons])
    elif result.api_fault is not None and result.api_fault.kind is FaultKind.REQUEST:
        if not finish(result.outcome.value, list(result.reasons), exit_code=result.exit_code):
            return Applied(None, fenced_out=True)
        t = refused_request(stage, result.reasons)
    else:
        view = TaskView(
            task.key,
            tuple(Stage(s) for s in repo.stages),
            developer_retries=task.developer_retries,
            infra_retries=task.infra_retries,
            gate_retries=task.gate_retries,
        )
        job_reasons = list(result.reasons)
        t = next_transition(
            view, stage, result.outcome, verdict, budgets_for(settings, stage, job.agent)
        )
        # What the process said (a patch that does not apply, a timeout) belongs with the
        # decision's reasons, so the history explains itself without opening the job.
        extra = [r for r in job_reasons if r not in t.reasons]
        t = dataclasses.replace(t, reasons=[*t.reasons, *extra])
        ok = finish(
            result.outcome.value,
            [*job_reasons, *(verdict.reasons if verdict else [])],
            verdict=verdict_name,
            exit_code=result.exit_code,
        )
        if not ok:
            return Applied(None, fenced_out=True)

    moving = (TransitionKind.ADVANCE, TransitionKind.ROLLBACK, TransitionKind.DEFER)
    if result.cost_usd is not None and t.kind in moving:
        # After an LLM job: its spend (just recorded) may have crossed a budget. Then the
        # task stops here with an alert rather than spending on in the next stage.
        check = check_budgets(
            task_spent_usd=spend.task_spend_usd(conn, task.id),
            day_spent_usd=spend.day_spend_usd(conn, since=now - spend.DAY_S),
            task_budget_usd=settings.llm_budget_per_task_usd,
            day_budget_usd=settings.llm_budget_per_day_usd,
            before_dispatch=False,
        )
        if not check.ok:
            # Blocked where the task was going, so a retry (after the budget is raised)
            # goes on from there instead of paying for this stage again.
            # The deferral it replaces does not happen: its "deferred Ns" line goes.
            kept = [
                r for r in t.reasons if not (t.backoff_s is not None and r.startswith("deferred "))
            ]
            t = Transition(
                TransitionKind.BLOCK,
                stage,
                t.to_stage,
                State.BLOCKED,
                [*kept, "LLM budget crossed by this job", *check.reasons],
                alert="llm-budget-exhausted",
            )
    developer_retries = task.developer_retries + (1 if t.spends_developer_retry else 0)
    infra_retries = task.infra_retries + (1 if t.spends_infra_retry else 0)
    gate_retries = task.gate_retries + (1 if t.spends_gate_retry else 0)
    if t.to_stage is not stage:
        # The infra budgets are spent per stage visit: a new stage starts with full ones.
        infra_retries = gate_retries = 0
    fresh = queries.update_task(
        conn,
        task.id,
        now=now,
        stage=t.to_stage.value,
        state=t.to_state.value,
        reasons=t.reasons,
        developer_retries=developer_retries,
        infra_retries=infra_retries,
        gate_retries=gate_retries,
    )
    queries.insert_transition(
        conn,
        task_id=task.id,
        job_id=job.id,
        kind=t.kind.value,
        from_stage=stage.value,
        to_stage=t.to_stage.value,
        from_state=task.state,
        to_state=t.to_state.value,
        reasons=t.reasons,
        actor="engine",
        now=now,
    )
    next_job: JobRow | None = None
    if t.kind in (TransitionKind.ADVANCE, TransitionKind.ROLLBACK):
        next_job = queue_job(
            conn, repo, fresh, t.to_stage, now=now, fresh_start=_fresh_start(t, verdict)
        )
    elif t.kind is TransitionKind.DEFER:
        # The process ran and its work stands when only a gate met infra trouble: then the
        # retry re-runs the gates alone (the merge gate's bounded infra retry), never the
        # stage's agent again.
        next_job = queue_job(
            conn,
            repo,
            fresh,
            t.to_stage,
            now=now,
            not_before=now + (t.backoff_s or 0.0),
            agent=GATE_ONLY_AGENT if t.spends_gate_retry else job.agent,
        )
    if t.kind is TransitionKind.DONE:
        # Nothing about a finished task needs a human any more.
        resolve_task_alerts(conn, task.id, now)
    alerts: list[AlertRow] = list(backend_alerts)
    if t.alert is not None:
        # Where to look first: the log of the job whose end raised it.
        log = taskdir.run_log_path(
            taskdir.task_dir(settings.tasks_dir, task.key), job.id, job.stage, job.agent
        )
        where = f"log: {log}" if log.exists() else f"log: none (job {job.id} wrote no log)"
        task_alert = raise_alert(
            conn,
            kind=t.alert,
            message=f"{task.key} {t.kind.value} at {stage.value}",
            reasons=[*t.reasons, where],
            now=now,
            task_id=task.id,
            repo_id=repo.id,
        )
        # Only news is delivered: a repeat of an open alert was delivered already.
        if task_alert.new:
            alerts.append(task_alert.alert)
    return Applied(t, alerts, next_job)
