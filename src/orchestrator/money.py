"""How LLM spend reads wherever a person sees it: `orch task show`, `orch status`, the dashboard.

One formatter, so a budget reads the same everywhere. Budgets can be fractions of a cent
(a test set-up's $0.001), so an amount under a dollar keeps two significant digits rather
than being rounded to cents: $0.0004 stays $0.0004, never "$0.00". Pure: values in, text out.
"""

from __future__ import annotations

import math

__all__ = ["budget_or_none", "budget_reached", "tokens", "tokens_in_out", "usd", "usd_of"]


def usd(amount: float | None) -> str:
    """``$12.50``, ``$1,234.50``, ``$0.30``, ``$0.001``, ``$0.0004``; ``-`` for None."""
    if amount is None:
        return "-"
    if not math.isfinite(amount):
        return f"${amount}"
    sign = "-" if amount < 0 else ""
    size = abs(amount)
    if size == 0:
        return "$0.00"
    if size >= 1:
        return f"{sign}${size:,.2f}"
    # Cents at least; below a cent, as many places as two significant digits need. Zeros
    # past the cents are dropped, so a budget of 0.001 reads as written, not "0.0010".
    places = max(2, 1 - math.floor(math.log10(size)))
    text = f"{size:.{places}f}"
    whole, _, cents = text.partition(".")
    cents = cents[:2] + cents[2:].rstrip("0")
    return f"{sign}${whole}.{cents}"


def tokens(count: int | None) -> str:
    """``1,234,567``; ``-`` for None (the job reported none)."""
    return "-" if count is None else f"{count:,}"


def tokens_in_out(tokens_in: int | None, tokens_out: int | None) -> str:
    """A job's tokens as its row shows them: ``1,200/345``; ``-/-`` when it reported none."""
    return f"{tokens(tokens_in)}/{tokens(tokens_out)}"


def budget_or_none(setting_usd: float) -> float | None:
    """A budget setting as a limit: 0 (the settings' "no limit") is None."""
    return setting_usd if setting_usd > 0 else None


def budget_reached(spent_usd: float, budget_usd: float | None) -> bool:
    """Whether the next LLM job would be refused: the spend has reached the budget.

    The same rule as the check before dispatch (``domain.budget``): at the limit is spent.
    """
    return budget_usd is not None and spent_usd >= budget_usd


def usd_of(spent_usd: float, budget_usd: float | None) -> str:
    """``$0.0004 of $0.001 (40%)``, or ``$0.30 (no budget)`` when there is none.

    The percentage is rounded down, so it reads 100% only when the budget is reached.
    """
    if budget_usd is None:
        return f"{usd(spent_usd)} (no budget)"
    share = math.floor(spent_usd / budget_usd * 100) if spent_usd > 0 else 0
    return f"{usd(spent_usd)} of {usd(budget_usd)} ({share}%)"
