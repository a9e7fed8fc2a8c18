"""The ``--budget`` grammar of the contract (``model/export/budgets.py``): what it reads, and
the one line it refuses with."""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.model.export import budget_mask_of, parse_budgets
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


def test_a_budget_keeps_a_stems_rows_nested() -> None:
    """SPEC.md section 5: after the cap, a stem module keeps only the steps the module before
    it kept, the modules after it only the steps with tokens; a budget that drops nothing
    leaves the mask alone."""
    mask = np.array([[1, 1, 1, 0],    # stem.0
                     [0, 1, 1, 0],    # stem.1
                     [1, 1, 1, 1],    # stem.rpe
                     [0, 1, 1, 1]])   # blocks.0.attn
    assert budget_mask_of(mask, 1, stem_modules=3).tolist() == [
        [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert budget_mask_of(mask, 2, stem_modules=3).tolist() == [
        [1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    assert budget_mask_of(mask, 4, stem_modules=3).tolist() == mask.tolist()
    assert budget_mask_of(mask, 1).tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
