"""The moves of ``domain.decide``: a job's end and a human's command, decided as values.

Each case is one of the branches ``engine/apply.py`` and the task commands used to take
themselves; here the decision is read without a database.
"""

from __future__ import annotations

import pytest

from orchestrator.domain import decide
from orchestrator.domain.decide import (
    APPROVED_AGENT,
    GATE_ONLY_AGENT,
    BackendWait,
    JobEnd,
    NextJob,
    Retries,
    SpendFigures,
    decide_job_end,
    job_record,
)
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import DEFAULT_STAGES, Budgets, Stage, State, TaskView
from orchestrator.domain.verdicts import Verdict, VerdictStatus, failed, passed
from orchestrator.errors import UsageError

BUDGETS = Budgets(
    developer_retry_budget=2,
    infra_retry_budget=2,
    infra_retry_backoff_s=10.0,
    gate_retry_budget=2,
    gate_retry_backoff_s=5.0,
)
TASK = TaskView("DEMO-1", DEFAULT_STAGES, developer_retries=1, infra_retries=1, gate_retries=1)


def _end(stage: Stage = Stage.TESTING, **kw: object) -> JobEnd:
    base: dict[str, object] = {"outcome": OutcomeKind.COMPLETED, "reasons": ("said so",)}
    base.update(kw)
    return JobEnd(stage, "test-runner", **base)  # type: ignore[arg-type]


def test_a_pass_advances_with_fresh_stage_budgets_and_the_next_stage_agent() -> None:
    move = decide_job_end(TASK, _end(verdict=passed("green")), BUDGETS)
    assert (move.kind, move.to_stage, move.to_state) == ("advance", Stage.DEPLOY_STAGING, "active")
    # The developer budget is the task's; the infra ones are per stage visit.
    assert move.retries == Retries(developer=1, infra=0, gate=0)
    assert move.next_job == NextJob(Stage.DEPLOY_STAGING)
    assert move.reasons[-1] == "said so"
    assert not move.resolve_alerts


def test_the_last_stage_passing_is_done_and_resolves_the_alerts() -> None:
    end = _end(Stage.DEPLOY_STAGING, verdict=passed("merged"))
    view = TaskView("DEMO-1", (Stage.DEVELOPMENT, Stage.TESTING, Stage.DEPLOY_STAGING))
    move = decide_job_end(view, end, BUDGETS)
    assert (move.kind, move.to_state, move.next_job) == ("done", State.DONE, None)
    assert move.resolve_alerts


def test_a_merge_conflict_rolls_back_onto_a_fresh_start() -> None:
    verdict = failed("does not rebase", fields={"merge_status": "CONFLICT"})
    move = decide_job_end(TASK, _end(Stage.DEPLOY_STAGING, verdict=verdict), BUDGETS)
    assert move.kind == "rollback"
    assert move.next_job == NextJob(Stage.DEVELOPMENT, fresh_start="carry")
    assert move.retries == Retries(developer=2, infra=0, gate=0)


def test_a_gate_s_infra_trouble_re_runs_the_gates_alone_after_its_backoff() -> None:
    verdict = Verdict(VerdictStatus.FAIL, ["re-test timed out"], tool_error="retest-timeout")
    move = decide_job_end(TASK, _end(Stage.DEPLOY_STAGING, verdict=verdict), BUDGETS)
    assert (move.kind, move.to_state) == ("defer", State.DEFERRED)
    assert move.next_job == NextJob(Stage.DEPLOY_STAGING, GATE_ONLY_AGENT, after_s=10.0)
    assert move.retries == Retries(developer=1, infra=1, gate=2)


def test_a_tool_error_runs_the_same_agent_again() -> None:
    move = decide_job_end(TASK, _end(outcome=OutcomeKind.TIMEOUT), BUDGETS)
    assert move.next_job == NextJob(Stage.TESTING, "test-runner", after_s=20.0)
    assert move.retries == Retries(developer=1, infra=2, gate=1)


def test_a_refusal_before_dispatch_blocks_with_its_alert_and_did_not_start() -> None:
    end = _end(refusal="sandbox-unavailable", exit_code=3)
    move = decide_job_end(TASK, end, BUDGETS)
    assert (move.kind, move.alert, move.next_job) == ("block", "sandbox-unavailable", None)
    record = job_record(end)
    assert (record.outcome, record.exit_code) == (OutcomeKind.NOT_STARTED, None)


def test_a_paused_backend_defers_without_spending_a_retry() -> None:
    end = _end(backend_wait=BackendWait(30.0, ("backend claude paused",)), verdict=None)
    move = decide_job_end(TASK, end, BUDGETS)
    assert (move.kind, move.retries) == ("defer", Retries(1, 1, 1))
    assert move.next_job == NextJob(Stage.TESTING, "test-runner", after_s=30.0)
    assert "backend claude paused" in move.reasons


def test_a_refused_request_blocks_for_a_human() -> None:
    move = decide_job_end(TASK, _end(request_refused=True), BUDGETS)
    assert (move.kind, move.alert) == ("block", "model-request-refused")


def test_spend_over_budget_blocks_where_the_task_was_going_and_drops_the_deferral() -> None:
    spend = SpendFigures(2.5, 2.5, task_budget_usd=2.0, day_budget_usd=0.0)
    deferred = _end(outcome=OutcomeKind.TIMEOUT, cost_usd=0.5)
    move = decide_job_end(TASK, deferred, BUDGETS, spend)
    assert (move.kind, move.alert, move.next_job) == ("block", "llm-budget-exhausted", None)
    assert not any(r.startswith("deferred ") for r in move.reasons)
    advancing = _end(verdict=passed("green"), cost_usd=0.5)
    move = decide_job_end(TASK, advancing, BUDGETS, spend)
    assert (move.to_stage, move.to_state) == (Stage.DEPLOY_STAGING, State.BLOCKED)
    # Within the budget, or a job that called no model: the spend does not stop it.
    within = SpendFigures(1.0, 1.0, task_budget_usd=2.0, day_budget_usd=0.0)
    assert decide_job_end(TASK, advancing, BUDGETS, within).kind == "advance"
    assert decide_job_end(TASK, _end(verdict=passed("green")), BUDGETS, spend).kind == "advance"


def test_the_job_record_keeps_the_gates_reasons_after_the_process_s() -> None:
    record = job_record(_end(verdict=failed("red"), exit_code=1))
    assert record == decide.JobRecord(OutcomeKind.COMPLETED, ("said so", "red"), "FAIL", 1)
    cancelled = job_record(_end(verdict=failed("red")), cancelled=True)
    assert cancelled.reasons == ("task was cancelled", "said so")
    assert cancelled.verdict is None


def test_a_reaped_job_is_a_timeout_whatever_it_said() -> None:
    outcome, reasons = decide.reaped(["exit 0"], 60.0)
    assert outcome is OutcomeKind.TIMEOUT
    assert reasons == ("reaper: ran longer than reaper_max_running_s (60s)", "exit 0")


def test_cancel_stops_the_running_job_and_refuses_an_ended_task() -> None:
    move = decide.cancel(Stage.TESTING, State.ACTIVE, "DEMO-1", actor="cli", reason="dup")
    assert (move.kind, move.to_state, move.reasons) == (
        "cancel",
        "cancelled",
        ("cancelled by cli: dup",),
    )
    assert move.cancel_running
    assert move.resolve_alerts
    assert move.next_job is None
    for ended in (State.DONE, State.CANCELLED):
        with pytest.raises(UsageError, match="nothing to cancel"):
            decide.cancel(Stage.TESTING, ended, "DEMO-1", actor="cli")


def test_retry_starts_the_budgets_afresh_and_a_patch_or_fresh_start_goes_to_development() -> None:
    move = decide.retry(Stage.TESTING, State.BLOCKED, "DEMO-1", actor="api", running=False)
    assert (move.to_stage, move.retries, move.next_job) == (
        Stage.TESTING,
        Retries(0, 0, 0),
        NextJob(Stage.TESTING),
    )
    assert move.drop_queued == "superseded by a retry by api"
    fresh = decide.retry(
        Stage.TESTING, State.DEFERRED, "DEMO-1", actor="cli", running=False, patch=True, fresh=True
    )
    assert fresh.next_job == NextJob(Stage.DEVELOPMENT, fresh_start="patch")
    with pytest.raises(UsageError, match="only a blocked or deferred"):
        decide.retry(Stage.TESTING, State.ACTIVE, "DEMO-1", actor="cli", running=False)
    with pytest.raises(UsageError, match="has a running job"):
        decide.retry(Stage.TESTING, State.BLOCKED, "DEMO-1", actor="cli", running=True)


def test_approve_gates_the_work_or_runs_the_stage_again_with_accepted_protected_changes() -> None:
    move = decide.approve(Stage.DEPLOY_STAGING, State.BLOCKED, "DEMO-1", actor="cli")
    assert move.next_job == NextJob(Stage.DEPLOY_STAGING, APPROVED_AGENT)
    held = decide.approve(
        Stage.TESTING, State.BLOCKED, "DEMO-1", actor="cli", accepted=["tests/test_a.py"]
    )
    # The stage's own agent runs again: the suite must run with the accepted changes.
    assert held.next_job == NextJob(Stage.TESTING, None)
    assert held.reasons[0].startswith("approved by cli: testing runs again")
    supplied = decide.approve(
        Stage.TESTING,
        State.BLOCKED,
        "DEMO-1",
        actor="cli",
        supplied="13-test-report.md",
        accepted=["tests/test_a.py"],
    )
    assert supplied.next_job == NextJob(Stage.TESTING, APPROVED_AGENT)
    assert "13-test-report.md supplied by cli" in supplied.reasons
    with pytest.raises(UsageError, match="only a blocked task"):
        decide.approve(Stage.TESTING, State.ACTIVE, "DEMO-1", actor="cli")


def test_a_gate_that_waits_defers_re_running_the_gates_and_spends_nothing() -> None:
    verdict = Verdict(VerdictStatus.FAIL, ["waiting for pull request #7"], wait_s=60.0)
    move = decide_job_end(TASK, _end(Stage.DEPLOY_STAGING, verdict=verdict), BUDGETS)
    assert (move.kind, move.to_state) == ("defer", State.DEFERRED)
    assert move.next_job == NextJob(Stage.DEPLOY_STAGING, GATE_ONLY_AGENT, after_s=60.0)
    assert move.retries == Retries(developer=1, infra=1, gate=1)
    assert "waiting for pull request #7" in move.reasons
