"""The mutation list fits the code, and its runner tells a killed mutant from a survivor."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "tests/mutation/run.py")
mutation = importlib.util.module_from_spec(_spec)
sys.modules["mutation_run"] = mutation
_spec.loader.exec_module(mutation)


def test_every_mutant_applies_exactly_once_and_names_existing_tests() -> None:
    mutants = mutation.load_mutants()
    assert len(mutants) >= 14
    for mutant in mutants:
        for test in mutant.tests:
            path, _, node = test.partition("::")
            if node:
                function = re.sub(r"\[.*\]$", "", node.split("::")[-1])
                source = (ROOT / path).read_text()
                assert re.search(rf"^(async )?def {re.escape(function)}\(", source, re.M), (
                    f"{mutant.name}: no test {function} in {path}")


def test_a_search_text_that_is_absent_or_repeated_is_refused() -> None:
    mutant = mutation.Mutant(name="m", breaks="b", file="f.py", search="x = 1",
                             replace="x = 2", tests=("tests/t.py",))
    assert mutant.mutate("y = 0\nx = 1\n") == "y = 0\nx = 2\n"
    for text, count in (("y = 0\n", 0), ("x = 1\nx = 1\n", 2)):
        with pytest.raises(mutation.MutantListError,
                           match=rf"^mutant m: its search text occurs {count} times in f\.py "
                                 r"\(expected exactly once\)$"):
            mutant.mutate(text)


def test_only_failing_tests_kill_a_mutant() -> None:
    assert [mutation.verdict_of(code) for code in (0, 1, 2, 4, 5, -1)] == [
        "survived", "killed", "error", "error", "error", "error"]


def test_the_runner_kills_a_real_bug_and_reports_a_harmless_change_as_surviving(
        tmp_path: Path) -> None:
    target = "model/export/budgets.py"
    test = "tests/export/test_export_reader.py::test_budget_mask_keeps_the_first_active_steps"
    real = mutation.Mutant(
        name="budget", breaks="budget", file=target, tests=(test,),
        search="kept = np.cumsum(mask, axis=1) <= int(budget)",
        replace="kept = np.cumsum(mask, axis=1) <= int(budget) + 1")
    harmless = mutation.Mutant(
        name="harmless", breaks="nothing", file=target, tests=(test,),
        search="kept = np.cumsum(mask, axis=1) <= int(budget)",
        replace="kept = np.cumsum(mask, axis=1) < int(budget) + 1")
    assert mutation.check_mutant(real, ROOT)[0] == "killed"
    assert mutation.check_mutant(harmless, ROOT)[0] == "survived"
    assert "int(budget) + 1" not in (ROOT / target).read_text()


def test_the_testing_doc_holds_the_table_generated_from_the_list() -> None:
    document = mutation.TABLE_DOC.read_text()
    table = mutation.markdown_table(mutation.load_mutants())
    assert document == mutation.with_table(document, table), (
        "docs/testing.md: the mutant table differs from tests/mutation/mutants.yaml; "
        "regenerate it with `python tests/mutation/run.py --table` (or `make docs`)")


def test_the_table_goes_between_the_markers_and_nowhere_else() -> None:
    begin, end = mutation.TABLE_BEGIN, mutation.TABLE_END
    document = f"# Testing\n{begin}\nold rows\n{end}\nafter\n"
    expected = f"# Testing\n{begin}\n| new |\n{end}\nafter\n"
    assert mutation.with_table(document, "| new |") == expected
    for broken in ("no markers\n", f"{end}\n{begin}\n", f"{begin}\n{begin}\n{end}\n"):
        with pytest.raises(mutation.MutantListError,
                           match=r"^docs/testing\.md: expected the marker"):
            mutation.with_table(broken, "| new |")
