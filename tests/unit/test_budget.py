"""LLM budgets: pure checks of spend against the per-task and per-day limits."""

from __future__ import annotations

import pytest

from orchestrator.domain.budget import check_budgets, check_day_budget, check_task_budget


def test_under_budget_is_ok() -> None:
    check = check_task_budget(1.5, 10.0)
    assert check.ok
    assert bool(check)
    assert check.reasons == ["llm_budget_per_task_usd: spent $1.50 of $10.00"]


def test_at_the_limit_no_new_job_is_dispatched() -> None:
    # Before dispatch the budget must still have room: at the limit the next job would
    # overspend. After a job, reaching the limit exactly is still within it.
    before = check_task_budget(10.0, 10.0)
    assert not before.ok
    assert "reached" in before.reasons[0]
    assert check_task_budget(10.0, 10.0, before_dispatch=False).ok


def test_over_budget_after_a_job() -> None:
    after = check_day_budget(100.01, 100.0, before_dispatch=False)
    assert not after.ok
    assert after.reasons == ["llm_budget_per_day_usd exceeded: spent $100.01 of $100.00"]


def test_zero_means_no_limit() -> None:
    assert check_task_budget(1e9, 0).ok
    assert "no limit" in check_day_budget(5.0, 0).reasons[0]


def test_negative_spend_fails_closed() -> None:
    assert not check_task_budget(-1.0, 10.0).ok


@pytest.mark.parametrize(
    ("task_spent", "day_spent", "ok"),
    [(0.0, 0.0, True), (9.99, 99.0, True), (10.0, 0.0, False), (0.0, 100.0, False)],
)
def test_both_budgets(task_spent: float, day_spent: float, ok: bool) -> None:
    check = check_budgets(
        task_spent_usd=task_spent,
        day_spent_usd=day_spent,
        task_budget_usd=10.0,
        day_budget_usd=100.0,
    )
    assert check.ok is ok
    assert len(check.reasons) == 2


def test_a_small_budget_reads_as_set() -> None:
    # A budget of a tenth of a cent used to read "$0.00" in the reason and the alert.
    check = check_budgets(
        task_spent_usd=0.0012,
        day_spent_usd=0.0,
        task_budget_usd=0.001,
        day_budget_usd=0.0,
        before_dispatch=True,
    )
    assert not check.ok
    assert "exceeded: spent $0.0012 of $0.001" in check.reasons[0], check.reasons
