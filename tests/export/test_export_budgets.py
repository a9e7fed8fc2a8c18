"""The ``--budget`` grammar of the contract (``model/export/budgets.py``): what it reads, and
the one line it refuses with."""

from __future__ import annotations

import pytest

from stepvit.model.export import parse_budgets
from stepvit.model.export.errors import StepvitError


@pytest.mark.parametrize(("text", "budgets"), [
    (None, [1, 2, 3, 4]), ("all", [1, 2, 3, 4]), ("2", [2]), ("1, 3", [1, 3]),
    ("1-4", [1, 2, 3, 4]), ("4,1-2,2", [4, 1, 2]),
])
def test_the_budget_grammar(text: str | None, budgets: list[int]) -> None:
    assert parse_budgets(text, 4) == budgets


@pytest.mark.parametrize(("text", "message"), [
    ("0", "--budget 0 is outside 1..4 (this export has t_max = 4)"),
    ("5", "--budget 5 is outside 1..4 (this export has t_max = 4)"),
    ("two", "--budget: expected a budget B, a list B1,B2, a range A-B, or all, got 'two'"),
    ("1,,2", "--budget: expected a budget B, a list B1,B2, a range A-B, or all, got '1,,2'"),
    ("3-1", "--budget: the range '3-1' is empty"),
])
def test_the_budget_grammar_refuses(text: str, message: str) -> None:
    with pytest.raises(StepvitError) as refused:
        parse_budgets(text, 4)
    assert str(refused.value) == message
