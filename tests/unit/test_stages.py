"""next_transition: every edge of STAGE_TRANSITIONS, with budgets and reasons."""

from __future__ import annotations

import pytest

from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import (
    DEFAULT_STAGES,
    PIPELINE,
    SERIAL_STAGES,
    STAGE_TRANSITIONS,
    Budgets,
    Stage,
    State,
    TaskView,
    TransitionKind,
    next_stage,
    next_transition,
    validate_pipeline,
)
from orchestrator.domain.verdicts import Verdict, VerdictStatus, failed, passed
from orchestrator.errors import UsageError

BUDGETS = Budgets(
    developer_retry_budget=2,
    infra_retry_budget=2,
    infra_retry_backoff_s=5,
    gate_retry_budget=3,
    gate_retry_backoff_s=7,
)
TASK = TaskView("DEMO-1", DEFAULT_STAGES)
OK = passed("ok")
BAD = failed("tests red")


def test_table_matches_design() -> None:
    assert PIPELINE == (
        Stage.ANALYSIS,
        Stage.DEVELOPMENT,
        Stage.TESTING,
        Stage.DEPLOY_STAGING,
        Stage.DEPLOY,
        Stage.POST_DEPLOY_MONITOR,
    )
    assert {Stage.DEPLOY_STAGING, Stage.DEPLOY, Stage.POST_DEPLOY_MONITOR} == SERIAL_STAGES
    assert STAGE_TRANSITIONS[Stage.TESTING].artifact == "13-test-report.md"
    assert "check_branch_mergeable" in STAGE_TRANSITIONS[Stage.DEPLOY_STAGING].checks


@pytest.mark.parametrize(
    ("stage", "to"),
    [
        (Stage.DEVELOPMENT, Stage.TESTING),
        (Stage.TESTING, Stage.DEPLOY_STAGING),
        (Stage.DEPLOY_STAGING, Stage.DEPLOY),
        (Stage.DEPLOY, Stage.POST_DEPLOY_MONITOR),
    ],
)
def test_pass_advances(stage: Stage, to: Stage) -> None:
    t = next_transition(TASK, stage, OutcomeKind.COMPLETED, OK, BUDGETS)
    assert (t.kind, t.to_stage, t.to_state) == (TransitionKind.ADVANCE, to, State.ACTIVE)
    assert t.reasons[0] == f"{stage.value}: PASS"


def test_last_stage_pass_is_done() -> None:
    t = next_transition(TASK, Stage.POST_DEPLOY_MONITOR, OutcomeKind.COMPLETED, OK, BUDGETS)
    assert (t.kind, t.to_state) == (TransitionKind.DONE, State.DONE)
    short = TaskView("X-1", validate_pipeline(["development", "testing", "deploy-staging"]))
    t = next_transition(short, Stage.DEPLOY_STAGING, OutcomeKind.COMPLETED, OK, BUDGETS)
    assert t.kind is TransitionKind.DONE


@pytest.mark.parametrize("stage", [Stage.DEVELOPMENT, Stage.TESTING, Stage.DEPLOY_STAGING])
def test_fail_rolls_back_within_budget_then_blocks(stage: Stage) -> None:
    t = next_transition(TASK, stage, OutcomeKind.COMPLETED, BAD, BUDGETS)
    assert (t.kind, t.to_stage) == (TransitionKind.ROLLBACK, Stage.DEVELOPMENT)
    assert t.spends_developer_retry
    assert "tests red" in t.reasons
    spent = TaskView("DEMO-1", DEFAULT_STAGES, developer_retries=2)
    t = next_transition(spent, stage, OutcomeKind.COMPLETED, BAD, BUDGETS)
    assert (t.kind, t.to_state, t.alert) == (
        TransitionKind.BLOCK,
        State.BLOCKED,
        "developer-budget-exhausted",
    )


@pytest.mark.parametrize("stage", [Stage.ANALYSIS, Stage.DEPLOY, Stage.POST_DEPLOY_MONITOR])
def test_fail_blocks_where_no_rollback(stage: Stage) -> None:
    t = next_transition(TASK, stage, OutcomeKind.COMPLETED, BAD, BUDGETS)
    assert (t.kind, t.to_state, t.alert) == (TransitionKind.BLOCK, State.BLOCKED, "task-blocked")


@pytest.mark.parametrize("outcome", [o for o in OutcomeKind if o.is_tool_error])
def test_tool_error_defers_with_backoff_then_blocks(outcome: OutcomeKind) -> None:
    t = next_transition(TASK, Stage.TESTING, outcome, None, BUDGETS)
    assert (t.kind, t.to_stage, t.to_state) == (
        TransitionKind.DEFER,
        Stage.TESTING,
        State.DEFERRED,
    )
    assert t.backoff_s == 5
    assert not t.spends_developer_retry
    second = TaskView("DEMO-1", DEFAULT_STAGES, infra_retries=1)
    assert next_transition(second, Stage.TESTING, outcome, None, BUDGETS).backoff_s == 10
    spent = TaskView("DEMO-1", DEFAULT_STAGES, infra_retries=2)
    t = next_transition(spent, Stage.TESTING, outcome, OK, BUDGETS)
    assert (t.kind, t.alert) == (TransitionKind.BLOCK, "infra-budget-exhausted")
    assert any("treated as FAILED" in r for r in t.reasons)


def test_gate_infra_trouble_defers_and_keeps_stage() -> None:
    v = Verdict(VerdictStatus.FAIL, ["re-test timed out"], tool_error="timeout")
    t = next_transition(TASK, Stage.DEPLOY_STAGING, OutcomeKind.COMPLETED, v, BUDGETS)
    assert (t.kind, t.to_stage) == (TransitionKind.DEFER, Stage.DEPLOY_STAGING)
    assert "re-test timed out" in t.reasons


def test_gate_trouble_spends_the_gates_own_budget_not_the_stages() -> None:
    v = Verdict(VerdictStatus.FAIL, ["push rejected"], tool_error="lock-busy")
    # The stage's own infra budget is spent; the gate's is not: the gate still defers.
    spent_infra = TaskView("DEMO-1", DEFAULT_STAGES, infra_retries=2, gate_retries=2)
    t = next_transition(spent_infra, Stage.DEPLOY_STAGING, OutcomeKind.COMPLETED, v, BUDGETS)
    assert (t.kind, t.spends_gate_retry, t.spends_infra_retry) == (
        TransitionKind.DEFER,
        True,
        False,
    )
    assert t.backoff_s == 7 * 4
    assert any("gate-only retry 3 of 3" in r for r in t.reasons)
    spent_gate = TaskView("DEMO-1", DEFAULT_STAGES, gate_retries=3)
    t = next_transition(spent_gate, Stage.DEPLOY_STAGING, OutcomeKind.COMPLETED, v, BUDGETS)
    assert (t.kind, t.alert) == (TransitionKind.BLOCK, "infra-budget-exhausted")
    assert any("gate-only retry budget spent (3)" in r for r in t.reasons)
    # A tool error of the process itself still spends the infra budget, never the gate's.
    crash = next_transition(TASK, Stage.DEPLOY_STAGING, OutcomeKind.CRASHED, None, BUDGETS)
    assert (crash.spends_infra_retry, crash.spends_gate_retry) == (True, False)


def test_no_verdict_fails_closed() -> None:
    t = next_transition(TASK, Stage.TESTING, OutcomeKind.COMPLETED, None, BUDGETS)
    assert t.kind is TransitionKind.ROLLBACK


# The property "only a completed PASS moves forward" is only_completed_pass_moves_forward in
# parser_properties/props_domain.py (run by test_parser_properties.py and the fuzz bench).


def test_validate_pipeline() -> None:
    assert validate_pipeline(["testing", "development", "deploy-staging"]) == (
        Stage.DEVELOPMENT,
        Stage.TESTING,
        Stage.DEPLOY_STAGING,
    )
    with pytest.raises(UsageError, match="unknown stage 'qa'"):
        validate_pipeline(["development", "qa"])
    with pytest.raises(UsageError, match="cannot be left out"):
        validate_pipeline(["development"])
    with pytest.raises(UsageError, match="needs the deploy stage"):
        validate_pipeline(["development", "testing", "deploy-staging", "post-deploy-monitor"])
    assert next_stage(DEFAULT_STAGES, Stage.DEPLOY_STAGING) is Stage.DEPLOY
