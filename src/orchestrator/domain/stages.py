"""The pipeline as data, and the one pure function that decides what happens after a job.

``STAGE_TRANSITIONS`` holds the pipeline table. ``next_transition`` reads it with
the job's outcome and verdict and the task's budgets, and returns a ``Transition`` value
with reasons; only the engine applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.verdicts import ARTIFACT_CHANGED, Verdict
from orchestrator.errors import UsageError


class Stage(StrEnum):
    """A step of the pipeline, in pipeline order."""

    ANALYSIS = "analysis"
    DEVELOPMENT = "development"
    TESTING = "testing"
    DEPLOY_STAGING = "deploy-staging"
    DEPLOY = "deploy"
    POST_DEPLOY_MONITOR = "post-deploy-monitor"


class State(StrEnum):
    """Where a task stands."""

    ACTIVE = "active"
    DEFERRED = "deferred"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({State.DONE, State.CANCELLED})
# A task that is not over, as the store keeps its state: its work may still move.
LIVE_STATES: tuple[str, ...] = (State.ACTIVE.value, State.DEFERRED.value, State.BLOCKED.value)


class TransitionKind(StrEnum):
    """The decision taken from outcome + verdict."""

    ADVANCE = "advance"
    ROLLBACK = "rollback"
    DEFER = "defer"
    BLOCK = "block"
    DONE = "done"


@dataclass(frozen=True)
class StageSpec:
    """One row of the pipeline table."""

    stage: Stage
    default_agent: str
    artifact: str
    checks: tuple[str, ...]
    # Where a FAIL verdict goes: back to development, or blocked for a human.
    on_fail: Stage | None
    # Whether the stage can be left out of a repo's pipeline.
    optional: bool
    # Serialized per repo: one task of a repo holds the stage at a time (the serial gate).
    serialized: bool = False
    # Steps run after the stage's gates passed (gates/registry.py AFTER_PASS: what each
    # does, and the one agent whose deterministic PASS it acts on).
    after_pass: tuple[str, ...] = ()


PIPELINE: tuple[Stage, ...] = tuple(Stage)

STAGE_TRANSITIONS: dict[Stage, StageSpec] = {
    Stage.ANALYSIS: StageSpec(
        Stage.ANALYSIS,
        "analyst",
        "03-analysis.md",
        ("check_analysis_ready",),
        on_fail=None,
        optional=True,
    ),
    Stage.DEVELOPMENT: StageSpec(
        Stage.DEVELOPMENT,
        "developer",
        "10-dev-report.md",
        ("check_dev_report", "check_branch_has_diff"),
        on_fail=Stage.DEVELOPMENT,
        optional=False,
    ),
    Stage.TESTING: StageSpec(
        Stage.TESTING,
        "test-runner",
        "13-test-report.md",
        ("check_tests_passed",),
        on_fail=Stage.DEVELOPMENT,
        optional=False,
        after_pass=("record_validated_tree", "open_pull_request"),
    ),
    Stage.DEPLOY_STAGING: StageSpec(
        Stage.DEPLOY_STAGING,
        "staging-runner",
        "15-staging-log.md",
        ("check_staging_status", "check_branch_mergeable"),
        on_fail=Stage.DEVELOPMENT,
        optional=False,
        serialized=True,
    ),
    Stage.DEPLOY: StageSpec(
        Stage.DEPLOY,
        "deploy-finalizer",
        "17-deploy-log.md",
        ("check_deploy_status",),
        on_fail=None,
        optional=True,
        serialized=True,
    ),
    Stage.POST_DEPLOY_MONITOR: StageSpec(
        Stage.POST_DEPLOY_MONITOR,
        "post-deploy-monitor",
        "18-monitor-report.md",
        ("check_monitor_status",),
        on_fail=None,
        optional=True,
        serialized=True,
    ),
}

SERIAL_STAGES = frozenset(s for s, spec in STAGE_TRANSITIONS.items() if spec.serialized)
# Between its serialized jobs a task keeps its repo's serial gate at these stages: from the
# moment its merge lands until its health watch ends (not between deploy-staging's jobs: a
# deferred merge-gate retry lets another task stage and merge first).
SERIAL_HOLD_STAGES = tuple(s.value for s in SERIAL_STAGES if s is not Stage.DEPLOY_STAGING)
DEFAULT_STAGES: tuple[Stage, ...] = tuple(s for s in PIPELINE if s is not Stage.ANALYSIS)

# The deterministic runners, by the agent name a repo's pipeline gives them (their code is
# ``orchestrator.runners``; the API and the CLI name them without importing it).
TEST_RUNNER = "test-runner"
STAGING_RUNNER = "staging-runner"
DEPLOY_FINALIZER = "deploy-finalizer"
POST_DEPLOY_MONITOR = "post-deploy-monitor"
RUNNERS = (TEST_RUNNER, STAGING_RUNNER, DEPLOY_FINALIZER, POST_DEPLOY_MONITOR)


def parse_stage(name: str) -> Stage:
    """A stage from its name; an unknown name is a UsageError listing the known ones."""
    try:
        return Stage(name.strip())
    except ValueError:
        known = ", ".join(s.value for s in PIPELINE)
        msg = f"unknown stage {name!r} (known: {known})"
        raise UsageError(msg) from None


def validate_pipeline(names: Iterable[str]) -> tuple[Stage, ...]:
    """A repo's stages in pipeline order; required stages present, no unknown names."""
    chosen = {parse_stage(n) for n in names}
    missing = [s.value for s in PIPELINE if not STAGE_TRANSITIONS[s].optional and s not in chosen]
    if missing:
        msg = f"stages {', '.join(missing)} cannot be left out of a pipeline"
        raise UsageError(msg)
    if Stage.POST_DEPLOY_MONITOR in chosen and Stage.DEPLOY not in chosen:
        msg = "post-deploy-monitor needs the deploy stage"
        raise UsageError(msg)
    return tuple(s for s in PIPELINE if s in chosen)


def next_stage(pipeline: Sequence[Stage], stage: Stage) -> Stage | None:
    """The stage after ``stage`` in a repo's pipeline; None when it is the last."""
    later = [s for s in pipeline if PIPELINE.index(s) > PIPELINE.index(stage)]
    return later[0] if later else None


@dataclass(frozen=True)
class TaskView:
    """What ``next_transition`` needs to know of a task."""

    key: str
    pipeline: tuple[Stage, ...]
    developer_retries: int = 0
    infra_retries: int = 0
    # Gate-only retries of this stage visit (a gate met infra trouble, not the process).
    gate_retries: int = 0


@dataclass(frozen=True)
class Budgets:
    """Retry budgets in force for this decision."""

    developer_retry_budget: int
    infra_retry_budget: int
    infra_retry_backoff_s: float
    # A gate's own infra trouble (the merge gate: a re-test timeout, a busy lock, a
    # rejected push) is counted apart from the stage's process, with its own budget.
    gate_retry_budget: int = 0
    gate_retry_backoff_s: float = 0.0


@dataclass(frozen=True)
class Transition:
    """A decision, with the reasons a human reads."""

    kind: TransitionKind
    from_stage: Stage
    to_stage: Stage
    to_state: State
    reasons: list[str] = field(default_factory=list)
    # Seconds to wait before the deferred job may run again.
    backoff_s: float | None = None
    # An alert a human must see, by kind (None: nothing to raise).
    alert: str | None = None
    spends_developer_retry: bool = False
    spends_infra_retry: bool = False
    spends_gate_retry: bool = False
    # The deferred job re-runs the stage's gates alone: the stage's work stands (a gate met
    # infra trouble, or waits for something outside).
    rerun_gates: bool = False


def next_transition(
    task: TaskView,
    stage: Stage,
    outcome: OutcomeKind,
    verdict: Verdict | None,
    budgets: Budgets,
) -> Transition:
    """Decide what follows a job: advance, rollback, defer, block or done.

    Level one: a tool error (or a gate that found infra trouble) is never the code's
    fault: defer within the infra budget (the gate's own budget for a gate's trouble),
    then block and treat as FAILED (fail closed).
    Level two: the tool ran, the verdict decides. Nothing advances without a PASS verdict.
    """
    spec = STAGE_TRANSITIONS[stage]
    verdict_reasons = list(verdict.reasons) if verdict is not None else []
    if not outcome.is_tool_error and verdict is not None and verdict.needs_human:
        return Transition(
            TransitionKind.BLOCK,
            stage,
            stage,
            State.BLOCKED,
            [f"{stage.value}: a human must look", *verdict_reasons],
            alert=verdict.needs_human,
        )
    # The job's artifact rewritten after it was written counts as the job's own tool
    # error: its work cannot be taken as it stands, and a gate-only retry would read the
    # rewritten file. The stage runs again within the infra budget, and a human is told
    # (an alert, also on a defer).
    changed = verdict is not None and verdict.tool_error == ARTIFACT_CHANGED
    if outcome.is_tool_error or changed:
        t = _defer_or_block(
            stage,
            ARTIFACT_CHANGED if changed else outcome.value,
            verdict_reasons,
            used=task.infra_retries,
            budget=budgets.infra_retry_budget,
            backoff_s=budgets.infra_retry_backoff_s,
            what="infra retry",
        )
        return dataclasses.replace(t, alert=ARTIFACT_CHANGED) if changed else t
    if verdict is not None and verdict.wait_s is not None and not verdict.tool_error:
        # A gate waits for something outside (a pull request's checks and reviews): nothing
        # failed, so nothing is spent; the gates run again after the wait.
        wait = max(verdict.wait_s, 0.0)
        return Transition(
            TransitionKind.DEFER,
            stage,
            stage,
            State.DEFERRED,
            [f"{stage.value}: waiting {wait:g}s; nothing failed", *verdict_reasons],
            backoff_s=wait,
            rerun_gates=True,
        )
    if verdict is not None and verdict.tool_error:
        # The process ran and its work stands; only a gate met infra trouble. Its retries
        # re-run the gates alone and are counted against the gate's own budget, so they
        # neither borrow from nor spend the stage runner's.
        return _defer_or_block(
            stage,
            verdict.tool_error,
            verdict_reasons,
            used=task.gate_retries,
            budget=budgets.gate_retry_budget,
            backoff_s=budgets.gate_retry_backoff_s,
            what="gate-only retry",
        )

    if verdict is None:
        reasons = [f"{stage.value}: no verdict was read; fail closed"]
        return _on_fail(task, stage, spec, reasons, budgets)

    if verdict.passed:
        following = next_stage(task.pipeline, stage)
        reasons = [f"{stage.value}: PASS", *verdict_reasons]
        if following is None:
            return Transition(TransitionKind.DONE, stage, stage, State.DONE, reasons)
        return Transition(TransitionKind.ADVANCE, stage, following, State.ACTIVE, reasons)

    reasons = [f"{stage.value}: FAIL", *verdict_reasons]
    return _on_fail(task, stage, spec, reasons, budgets)


def _defer_or_block(
    stage: Stage,
    tool_error: str,
    verdict_reasons: list[str],
    *,
    used: int,
    budget: int,
    backoff_s: float,
    what: str,
) -> Transition:
    """Level one: defer with backoff within ``budget``; when it is spent, fail closed."""
    reasons = [f"{stage.value}: tool error {tool_error}; the code is not blamed", *verdict_reasons]
    gate = what.startswith("gate")
    if used < budget:
        backoff = backoff_s * (2**used)
        reasons.append(f"deferred {backoff:g}s ({what} {used + 1} of {budget})")
        return Transition(
            TransitionKind.DEFER,
            stage,
            stage,
            State.DEFERRED,
            reasons,
            backoff_s=backoff,
            spends_infra_retry=not gate,
            spends_gate_retry=gate,
            rerun_gates=gate,
        )
    reasons.append(f"{what} budget spent ({budget}); treated as FAILED")
    return Transition(
        TransitionKind.BLOCK, stage, stage, State.BLOCKED, reasons, alert="infra-budget-exhausted"
    )


def _on_fail(
    task: TaskView, stage: Stage, spec: StageSpec, reasons: list[str], budgets: Budgets
) -> Transition:
    if spec.on_fail is None:
        return Transition(
            TransitionKind.BLOCK,
            stage,
            stage,
            State.BLOCKED,
            [*reasons, f"{stage.value} failed: a human must look"],
            alert="task-blocked",
        )
    if task.developer_retries < budgets.developer_retry_budget:
        return Transition(
            TransitionKind.ROLLBACK,
            stage,
            spec.on_fail,
            State.ACTIVE,
            [
                *reasons,
                f"rolled back to {spec.on_fail.value} (developer retry "
                f"{task.developer_retries + 1} of {budgets.developer_retry_budget})",
            ],
            spends_developer_retry=True,
        )
    return Transition(
        TransitionKind.BLOCK,
        stage,
        stage,
        State.BLOCKED,
        [*reasons, f"developer retry budget spent ({budgets.developer_retry_budget})"],
        alert="developer-budget-exhausted",
    )


def wait_for_backend(stage: Stage, wait_s: float, reasons: Sequence[str]) -> Transition:
    """The job's model backend is paused (an outage, rejected credentials): the stage runs
    again once it may, and neither the task's infra nor its developer budget is spent, since
    the failure is not the task's own."""
    return Transition(
        TransitionKind.DEFER,
        stage,
        stage,
        State.DEFERRED,
        [f"{stage.value}: waiting for the model backend; the code is not blamed", *reasons],
        backoff_s=max(wait_s, 0.0),
    )


def refused_request(stage: Stage, reasons: Sequence[str]) -> Transition:
    """The model server refused the job's request (a 400): waiting or another attempt of
    the same request changes nothing, and the code is not to blame: a human must look."""
    return Transition(
        TransitionKind.BLOCK,
        stage,
        stage,
        State.BLOCKED,
        [f"{stage.value}: the model server refused the request; a human must look", *reasons],
        alert="model-request-refused",
    )
