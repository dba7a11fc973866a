"""run_gates: the verdict of the check that did not pass is carried whole, a wait included."""

from __future__ import annotations

from typing import Any, cast

import pytest

from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.domain.stages import (
    DEFAULT_STAGES,
    Budgets,
    Stage,
    State,
    TaskView,
    TransitionKind,
    next_transition,
)
from orchestrator.domain.verdicts import Verdict, VerdictStatus, passed
from orchestrator.gates import registry
from orchestrator.gates.context import GateContext

BUDGETS = Budgets(
    developer_retry_budget=2,
    infra_retry_budget=2,
    infra_retry_backoff_s=5,
    gate_retry_budget=3,
    gate_retry_backoff_s=7,
)


class _Ctx:
    stage = Stage.DEPLOY_STAGING


def _with_merge_verdict(monkeypatch: pytest.MonkeyPatch, verdict: Verdict) -> Verdict:
    checks: dict[str, Any] = dict(registry.CHECKS)
    checks["check_staging_status"] = lambda ctx: passed("staging passed")
    checks["check_branch_mergeable"] = lambda ctx: verdict
    monkeypatch.setattr(registry, "CHECKS", checks)
    return registry.run_gates(cast(GateContext, _Ctx()))


def test_a_pull_request_still_waiting_defers_the_stage_instead_of_rolling_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = Verdict(VerdictStatus.FAIL, ["waiting for pull request #1"], wait_s=0.5)
    verdict = _with_merge_verdict(monkeypatch, waiting)
    assert verdict.wait_s == 0.5
    assert "check_branch_mergeable: waiting for pull request #1" in verdict.reasons
    t = next_transition(
        TaskView("DEMO-1", DEFAULT_STAGES),
        Stage.DEPLOY_STAGING,
        OutcomeKind.COMPLETED,
        verdict,
        BUDGETS,
    )
    assert (t.kind, t.to_state, t.rerun_gates) == (TransitionKind.DEFER, State.DEFERRED, True)
    assert t.backoff_s == 0.5


def test_a_red_merge_gate_still_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    red = Verdict(VerdictStatus.FAIL, ["check ci failed: lint"])
    verdict = _with_merge_verdict(monkeypatch, red)
    assert verdict.wait_s is None
    t = next_transition(
        TaskView("DEMO-1", DEFAULT_STAGES),
        Stage.DEPLOY_STAGING,
        OutcomeKind.COMPLETED,
        verdict,
        BUDGETS,
    )
    assert t.kind is TransitionKind.ROLLBACK
