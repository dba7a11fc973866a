"""How a task moves: after a job's end, and on a human's cancel, retry or approve.

Values in, a ``Move`` out, no I/O. ``JobEnd`` says how a job ended (its outcome and
reasons, the gates' verdict, a refusal before dispatch, a wait for a paused model backend,
the LLM spend once it is recorded); ``decide_job_end`` returns the move with its reasons,
the task's retry counters after it, and the job that follows, agent included. ``cancel``,
``retry`` and ``approve`` return a move the same way. The engine (``engine/apply.py``) and
the task commands (``tasks.py``) only store it, through ``store.history.record_transition``
and ``engine.queue.queue_job``: nothing outside ``domain/`` picks a next stage or agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.domain.budget import check_budgets
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
from orchestrator.errors import UsageError

__all__ = [
    "APPROVED_AGENT",
    "GATE_ONLY_AGENT",
    "NO_PROCESS_AGENTS",
    "BackendWait",
    "JobEnd",
    "JobRecord",
    "Move",
    "NextJob",
    "Retries",
    "SpendFigures",
    "approve",
    "cancel",
    "check_approvable",
    "decide_job_end",
    "job_record",
    "reaped",
    "retry",
]

# A job a human approved: no process runs, the stage's gates judge the work as it stands.
APPROVED_AGENT = "approved"
# A job that re-runs only the stage's gates: the process ran and its work stands, a gate
# met infra trouble (the merge gate's bounded retry).
GATE_ONLY_AGENT = "gate-only"
NO_PROCESS_AGENTS = frozenset({APPROVED_AGENT, GATE_ONLY_AGENT})

# The kinds of move that go on to a next job.
_MOVING = (TransitionKind.ADVANCE, TransitionKind.ROLLBACK, TransitionKind.DEFER)


@dataclass(frozen=True)
class BackendWait:
    """The job's model backend is paused: wait this long, for these reasons."""

    wait_s: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpendFigures:
    """The LLM spend once the job's own is recorded, and the budgets in force (0: none)."""

    task_spent_usd: float
    day_spent_usd: float
    task_budget_usd: float
    day_budget_usd: float


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, all a decision needs to know of it."""

    stage: Stage
    agent: str
    outcome: OutcomeKind
    reasons: tuple[str, ...] = ()
    verdict: Verdict | None = None
    exit_code: int | None = None
    # Refused before dispatch, by the alert a human gets (an LLM budget is spent, untrusted
    # code has no sandbox); None: it was dispatched.
    refusal: str | None = None
    # The job asked a human (an analyst's open question): the task waits for an approval.
    awaiting_human: bool = False
    # The model server refused the job's request itself (a 400).
    request_refused: bool = False
    # Its model backend is paused: the job waits for it instead of charging its task.
    backend_wait: BackendWait | None = None
    # The job spent money on a model (its cost is recorded); None: it called none.
    cost_usd: float | None = None

    @property
    def tells_breaker(self) -> bool:
        """Whether the job's end is news for its model backend's breaker: a job refused
        before dispatch or waiting for a human says nothing about the backend."""
        return self.refusal is None and not self.awaiting_human


@dataclass(frozen=True)
class JobRecord:
    """What the job's own row keeps of its end."""

    outcome: OutcomeKind
    reasons: tuple[str, ...]
    verdict: str | None
    exit_code: int | None


@dataclass(frozen=True)
class Retries:
    """The task's retry counters after a move."""

    developer: int
    infra: int
    gate: int


@dataclass(frozen=True)
class NextJob:
    """The job a move queues: ``agent`` None is the stage's own agent as the repo sets it."""

    stage: Stage
    agent: str | None = None
    after_s: float = 0.0
    # See jobs.fresh_start: "carry" the branch's change or apply the newest "patch" onto a
    # worktree rebuilt from current main.
    fresh_start: str | None = None


@dataclass(frozen=True)
class Move:
    """A task's move, ready to store: its history entry, its new place and counters, what it
    stops and resolves, and the job it queues."""

    kind: str
    from_stage: Stage
    to_stage: Stage
    to_state: State
    reasons: tuple[str, ...]
    alert: str | None = None
    # None: the counters stay as they are.
    retries: Retries | None = None
    next_job: NextJob | None = None
    # The task's open alerts are resolved: it moved on, or it is done.
    resolve_alerts: bool = False
    # Queued jobs of the task are dropped, with this reason (a human's command supersedes
    # them); None: they stay.
    drop_queued: str | None = None
    # The task's running job is asked to stop.
    cancel_running: bool = False
    # The engine's transition this move stores; None for a human's command.
    transition: Transition | None = field(default=None, compare=False)


def reaped(reasons: Sequence[str], limit_s: float) -> tuple[OutcomeKind, tuple[str, ...]]:
    """How a job the reaper stopped ended, whatever its process said: it ran too long, a
    timeout (the infra budget's, never the code's fault)."""
    limit = f"reaper: ran longer than reaper_max_running_s ({limit_s:g}s)"
    return OutcomeKind.TIMEOUT, (limit, *reasons)


def job_record(end: JobEnd, *, cancelled: bool = False) -> JobRecord:
    """What the job's row keeps, whatever follows: a cancelled task's job says so, a job
    refused before dispatch did not start, the gates' reasons follow the process's."""
    if cancelled:
        return JobRecord(end.outcome, ("task was cancelled", *end.reasons), None, end.exit_code)
    if end.refusal is not None:
        return JobRecord(OutcomeKind.NOT_STARTED, end.reasons, None, None)
    if end.awaiting_human:
        return JobRecord(OutcomeKind.COMPLETED, end.reasons, None, None)
    if end.backend_wait is not None or end.request_refused:
        return JobRecord(end.outcome, end.reasons, None, end.exit_code)
    verdict = end.verdict
    return JobRecord(
        end.outcome,
        (*end.reasons, *(verdict.reasons if verdict else ())),
        None if verdict is None else verdict.status.value,
        end.exit_code,
    )


def _transition(task: TaskView, end: JobEnd, budgets: Budgets) -> Transition:
    """The decision before the spend is looked at."""
    stage = end.stage
    if end.refusal is not None:
        # Blocked, not deferred: waiting brings neither money nor bubblewrap, and a retry
        # loop would hide the reason.
        reasons = [f"{stage.value}: blocked before dispatch", *end.reasons]
        return Transition(
            TransitionKind.BLOCK, stage, stage, State.BLOCKED, reasons, alert=end.refusal
        )
    if end.awaiting_human:
        reasons = [f"{stage.value}: awaiting human", *end.reasons]
        return Transition(
            TransitionKind.BLOCK, stage, stage, State.BLOCKED, reasons, alert="awaiting-human"
        )
    if end.backend_wait is not None:
        wait = end.backend_wait
        return wait_for_backend(stage, wait.wait_s, [*wait.reasons, *end.reasons])
    if end.request_refused:
        return refused_request(stage, end.reasons)
    t = next_transition(task, stage, end.outcome, end.verdict, budgets)
    # What the process said (a patch that does not apply, a timeout) belongs with the
    # decision's reasons, so the history explains itself without opening the job.
    extra = [r for r in end.reasons if r not in t.reasons]
    return dataclasses.replace(t, reasons=[*t.reasons, *extra])


def _over_budget(t: Transition, spend: SpendFigures) -> Transition:
    """After an LLM job: its spend may have crossed a budget. Then the task stops here with
    an alert rather than spending on in the next stage."""
    check = check_budgets(
        task_spent_usd=spend.task_spent_usd,
        day_spent_usd=spend.day_spent_usd,
        task_budget_usd=spend.task_budget_usd,
        day_budget_usd=spend.day_budget_usd,
        before_dispatch=False,
    )
    if check.ok:
        return t
    # Blocked where the task was going, so a retry (after the budget is raised) goes on
    # from there instead of paying for this stage again. The deferral it replaces does not
    # happen: its "deferred Ns" line goes.
    kept = [r for r in t.reasons if not (t.backoff_s is not None and r.startswith("deferred "))]
    return Transition(
        TransitionKind.BLOCK,
        t.from_stage,
        t.to_stage,
        State.BLOCKED,
        [*kept, "LLM budget crossed by this job", *check.reasons],
        alert="llm-budget-exhausted",
    )


def _fresh_start(t: Transition, verdict: Verdict | None) -> str | None:
    """A branch that no longer rebases onto main starts again from current main, its old
    change carried over: working on the old base would only conflict again."""
    conflict = verdict is not None and verdict.fields.get("merge_status") == "CONFLICT"
    return "carry" if t.kind is TransitionKind.ROLLBACK and conflict else None


def _next_job(t: Transition, end: JobEnd) -> NextJob | None:
    if t.kind in (TransitionKind.ADVANCE, TransitionKind.ROLLBACK):
        return NextJob(t.to_stage, fresh_start=_fresh_start(t, end.verdict))
    if t.kind is TransitionKind.DEFER:
        # The process ran and its work stands when only a gate met infra trouble: then the
        # retry re-runs the gates alone, never the stage's agent again.
        agent = GATE_ONLY_AGENT if t.rerun_gates else end.agent
        return NextJob(t.to_stage, agent, after_s=t.backoff_s or 0.0)
    return None


def decide_job_end(
    task: TaskView, end: JobEnd, budgets: Budgets, spend: SpendFigures | None = None
) -> Move:
    """The move that follows a job of a live task: ``spend`` is the LLM spend with the job's
    own recorded (None: the job called no model)."""
    t = _transition(task, end, budgets)
    if spend is not None and end.cost_usd is not None and t.kind in _MOVING:
        t = _over_budget(t, spend)
    retries = Retries(
        task.developer_retries + (1 if t.spends_developer_retry else 0),
        task.infra_retries + (1 if t.spends_infra_retry else 0),
        task.gate_retries + (1 if t.spends_gate_retry else 0),
    )
    if t.to_stage is not end.stage:
        # The infra budgets are spent per stage visit: a new stage starts with full ones.
        retries = dataclasses.replace(retries, infra=0, gate=0)
    return Move(
        t.kind.value,
        end.stage,
        t.to_stage,
        t.to_state,
        tuple(t.reasons),
        alert=t.alert,
        retries=retries,
        next_job=_next_job(t, end),
        # Nothing about a finished task needs a human any more.
        resolve_alerts=t.kind is TransitionKind.DONE,
        transition=t,
    )


def cancel(stage: Stage, state: State, key: str, *, actor: str, reason: str = "") -> Move:
    """A human cancels a live task; its running job is asked to stop."""
    if state in (State.DONE, State.CANCELLED):
        msg = f"{key} is {state}; nothing to cancel"
        raise UsageError(msg)
    why = f"cancelled by {actor}" + (f": {reason}" if reason else "")
    return Move(
        "cancel",
        stage,
        stage,
        State.CANCELLED,
        (why,),
        resolve_alerts=True,
        cancel_running=True,
    )


def retry(
    stage: Stage,
    state: State,
    key: str,
    *,
    actor: str,
    running: bool,
    patch: bool = False,
    fresh: bool = False,
) -> Move:
    """A human gives a blocked or deferred task another go; its budgets start afresh.

    With a new ``patch``, it goes back to development, which applies the newest patch.
    ``fresh`` sends it back to development on a worktree rebuilt from current main: the
    newest patch (when one is attached now) or the branch's old change is applied there."""
    if state not in (State.BLOCKED, State.DEFERRED):
        msg = f"{key} is {state}; only a blocked or deferred task can be retried"
        raise UsageError(msg)
    if running:
        msg = f"{key} has a running job; wait for it or cancel the task"
        raise UsageError(msg)
    to = stage
    reasons = [f"retried by {actor}; retry budgets start afresh"]
    if patch:
        to = Stage.DEVELOPMENT
        reasons.append("a new patch was attached; back to development")
    fresh_start = None
    if fresh:
        to = Stage.DEVELOPMENT
        fresh_start = "patch" if patch else "carry"
        reasons.append("a fresh start: the worktree is rebuilt from current main")
    return Move(
        "retry",
        stage,
        to,
        State.ACTIVE,
        tuple(reasons),
        retries=Retries(0, 0, 0),
        next_job=NextJob(to, fresh_start=fresh_start),
        resolve_alerts=True,
        drop_queued=f"superseded by a retry by {actor}",
    )


def check_approvable(state: State, key: str) -> None:
    """Only a blocked task waits for a human's approval."""
    if state != State.BLOCKED:
        msg = f"{key} is {state}; only a blocked task can be approved"
        raise UsageError(msg)


def approve(
    stage: Stage,
    state: State,
    key: str,
    *,
    actor: str,
    supplied: str | None = None,
    accepted: Sequence[str] | None = None,
) -> Move:
    """A human says the blocked stage's work is done; the stage's gates still decide.

    ``supplied``: the artifact the human gave (it stands as the stage's work). ``accepted``:
    the protected changes of a task held at testing that the human accepts; then, with no
    artifact supplied, the stage's own agent runs again (the suite runs with them)."""
    check_approvable(state, key)
    reasons = [f"approved by {actor}: {stage.value} is to be gated"]
    if supplied is not None:
        reasons.append(f"{supplied} supplied by {actor}")
    agent: str | None = APPROVED_AGENT
    if accepted is not None:
        reasons.append(f"protected changes accepted by {actor}: {', '.join(accepted)}")
        if supplied is None:
            agent = None
            reasons[0] = (
                f"approved by {actor}: testing runs again, with the protected changes "
                f"(the gates still run)"
            )
    return Move(
        "approve",
        stage,
        stage,
        State.ACTIVE,
        tuple(reasons),
        next_job=NextJob(stage, agent),
        resolve_alerts=True,
        drop_queued=f"superseded by an approval by {actor}",
    )
