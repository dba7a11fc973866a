"""The one money formatter: small budgets stay legible, large amounts read as dollars."""

from __future__ import annotations

import pytest

from orchestrator import money


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, "-"),
        (0, "$0.00"),
        (0.0004, "$0.0004"),
        (0.00045, "$0.00045"),
        (0.001, "$0.001"),
        (0.0014, "$0.0014"),
        (0.001 + 0.0004, "$0.0014"),  # float noise is not shown
        (0.015, "$0.015"),
        (0.0123, "$0.012"),
        (0.3, "$0.30"),
        (0.1 + 0.2, "$0.30"),
        (0.25, "$0.25"),
        (0.999, "$1.00"),
        (12.5, "$12.50"),
        (1234.5, "$1,234.50"),
        (-0.001, "-$0.001"),
        (1e-9, "$0.000000001"),
    ],
)
def test_usd(amount: float | None, text: str) -> None:
    assert money.usd(amount) == text


def test_tokens_have_thousands_separators() -> None:
    assert money.tokens(1_234_567) == "1,234,567"
    assert money.tokens(0) == "0"
    assert money.tokens(None) == "-"
    assert money.tokens_in_out(1200, 345) == "1,200/345"
    assert money.tokens_in_out(None, None) == "-/-"


def test_a_budget_of_zero_is_none() -> None:
    assert money.budget_or_none(0) is None
    assert money.budget_or_none(0.001) == 0.001


@pytest.mark.parametrize(
    ("spent", "budget", "text", "reached"),
    [
        (0.0004, 0.001, "$0.0004 of $0.001 (40%)", False),
        # Rounded down: 100% only once reached, as the check before dispatch counts it.
        (0.000999, 0.001, "$0.001 of $0.001 (99%)", False),
        (0.001, 0.001, "$0.001 of $0.001 (100%)", True),
        (0.0014, 0.001, "$0.0014 of $0.001 (140%)", True),
        (0, 0.001, "$0.00 of $0.001 (0%)", False),
        (12.5, None, "$12.50 (no budget)", False),
    ],
)
def test_spent_of_a_budget(spent: float, budget: float | None, text: str, reached: bool) -> None:
    assert money.usd_of(spent, budget) == text
    assert money.budget_reached(spent, budget) is reached
