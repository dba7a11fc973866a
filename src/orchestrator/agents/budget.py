"""LLM money: pure checks of what was spent against ``llm_budget_per_task_usd`` and
``llm_budget_per_day_usd``.

Values in, a ``BudgetCheck`` out, no I/O: the engine reads the spend from the store
(``store.spend``), asks here, and blocks the task with an alert when the answer is no.
A budget of 0 means no limit. Spending exactly the budget is allowed; a cent more is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.money import usd

__all__ = ["BudgetCheck", "check_budgets", "check_day_budget", "check_task_budget"]


@dataclass(frozen=True)
class BudgetCheck:
    """Whether an LLM job may run (before dispatch) or the spend is still within bounds
    (after a job), with the reasons a human reads."""

    ok: bool
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


def _check(what: str, spent_usd: float, budget_usd: float, *, before_dispatch: bool) -> BudgetCheck:
    if budget_usd <= 0:
        return BudgetCheck(True, [f"{what}: no limit set (spent {usd(spent_usd)})"])
    if spent_usd < 0:
        # A negative sum can only be a bookkeeping bug: fail closed rather than trust it.
        return BudgetCheck(False, [f"{what}: spend {usd(spent_usd)} is negative; refusing"])
    # Before dispatch, the budget must still have room: at the limit, the next job would
    # overspend. After a job, reaching the limit exactly is still within it.
    over = spent_usd >= budget_usd if before_dispatch else spent_usd > budget_usd
    if over:
        verb = "reached" if spent_usd == budget_usd else "exceeded"
        return BudgetCheck(
            False,
            [f"{what} {verb}: spent {usd(spent_usd)} of {usd(budget_usd)}"],
        )
    return BudgetCheck(True, [f"{what}: spent {usd(spent_usd)} of {usd(budget_usd)}"])


def check_task_budget(
    spent_usd: float, budget_usd: float, *, before_dispatch: bool = True
) -> BudgetCheck:
    """The task's LLM spend against ``llm_budget_per_task_usd``."""
    return _check("llm_budget_per_task_usd", spent_usd, budget_usd, before_dispatch=before_dispatch)


def check_day_budget(
    spent_usd: float, budget_usd: float, *, before_dispatch: bool = True
) -> BudgetCheck:
    """The last 24 hours' LLM spend, all tasks, against ``llm_budget_per_day_usd``."""
    return _check("llm_budget_per_day_usd", spent_usd, budget_usd, before_dispatch=before_dispatch)


def check_budgets(
    *,
    task_spent_usd: float,
    day_spent_usd: float,
    task_budget_usd: float,
    day_budget_usd: float,
    before_dispatch: bool = True,
) -> BudgetCheck:
    """Both budgets; ok only when both are, with every reason."""
    task = check_task_budget(task_spent_usd, task_budget_usd, before_dispatch=before_dispatch)
    day = check_day_budget(day_spent_usd, day_budget_usd, before_dispatch=before_dispatch)
    return BudgetCheck(task.ok and day.ok, [*task.reasons, *day.reasons])
