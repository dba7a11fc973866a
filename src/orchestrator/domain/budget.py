"""LLM money: pure checks of what was spent against ``llm_budget_per_task_usd`` and
``llm_budget_per_day_usd``.

Values in, a ``BudgetCheck`` out, no I/O: the engine reads the spend from the store
(``store.spend``), asks here, and blocks the task with an alert when the answer is no.
A budget of 0 means no limit. Spending exactly the budget is allowed; a cent more is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.money import usd

__all__ = [
    "BudgetCheck",
    "check_budgets",
    "check_day_budget",
    "check_task_budget",
    "reserve",
]


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


def reserve(
    *,
    task_left_usd: float | None,
    day_left_usd: float | None,
    reserved_by_others_usd: float,
) -> tuple[float | None, str | None]:
    """A job's spend cap at dispatch, reserved against the day budget: what is left of the
    task's budget, within what the day budget has left after the reservations of the LLM
    jobs running now. (None, None): no cap; (None, why): no room now, wait for the running
    jobs to end. Parallel jobs then cannot jointly overshoot the day budget by more than
    what their last model calls cost."""
    room = None if day_left_usd is None else day_left_usd - reserved_by_others_usd
    if room is not None and room <= 0:
        return None, (
            f"the day budget's {usd(max(day_left_usd or 0.0, 0.0))} left is reserved by "
            f"running jobs ({usd(reserved_by_others_usd)}); waiting for them to end"
        )
    caps = [c for c in (task_left_usd, room) if c is not None]
    return (min(caps) if caps else None), None
