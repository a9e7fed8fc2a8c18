"""Run the curated mutation list: each planted bug must make its tests fail.

Every entry of ``tests/mutation/mutants.yaml`` names a plausible bug by the behaviour it
breaks, the one place it is planted (a ``search`` text that must occur exactly once in
``file``, replaced by ``replace``) and the tests that must catch it. For each entry this
copies the working tree (tracked and untracked, not ignored files) to a temporary folder,
plants the bug there, and runs the named tests against the copy; the copy is imported in
place of the installed package (a ``stepvit`` package whose ``__path__`` is the copy's
root, first on ``PYTHONPATH``), so the working tree itself is never touched.

A mutant is *killed* when pytest reports failed tests (exit code 1), *survives* when they
pass, and is an *error* on anything else (a test id that matches nothing, a usage error):
a list entry that no longer fits the code is a defect of the list, not a kill.

Usage::

    python tests/mutation/run.py [--only NAME ...] [--jobs N] [--list | --markdown | --table]

``--table`` writes the list as a markdown table into ``docs/testing.md``, between the two
marker comments there (``make docs`` runs it); ``tests/test_mutation_list.py`` fails while
the table in the document differs from the list.

Exit status 0 when every selected mutant is killed, 1 otherwise, 2 on a bad list.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MUTANTS_FILE = Path(__file__).with_name("mutants.yaml")
#: The keys of one entry; every one is required.
FIELDS = ("name", "breaks", "file", "search", "replace", "tests")
#: Seconds one mutant's tests may run before the mutant counts as an error.
TIMEOUT_S = 900
#: The document that holds the generated table, and the comments that enclose the table.
TABLE_DOC = ROOT / "docs" / "testing.md"
TABLE_BEGIN = "<!-- mutant table: written by `python tests/mutation/run.py --table` -->"
TABLE_END = "<!-- end of the mutant table -->"


class MutantListError(Exception):
    """The list is malformed or an entry no longer fits the code."""


@dataclass(frozen=True)
class Mutant:
    """One planted bug: where it goes and which tests must catch it."""

    name: str
    breaks: str
    file: str
    search: str
    replace: str
    tests: tuple[str, ...]

    def mutate(self, text: str) -> str:
        """Return ``text`` with the bug planted; the search text must occur exactly once."""
        count = text.count(self.search)
        if count != 1:
            raise MutantListError(f"mutant {self.name}: its search text occurs {count} times "
                                  f"in {self.file} (expected exactly once)")
        return text.replace(self.search, self.replace)


def load_mutants(path: Path = MUTANTS_FILE, root: Path = ROOT) -> list[Mutant]:
    """Read and check the list: fields, unique names, files present, search text unique.

    Raises
    ------
    MutantListError
        With one line naming the entry and what is wrong.
    """
    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not entries:
        raise MutantListError(f"{path.name}: expected a non-empty list of mutants")
    mutants: list[Mutant] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or sorted(entry) != sorted(FIELDS):
            raise MutantListError(f"{path.name}: entry {index}: expected exactly the keys "
                                  f"{', '.join(FIELDS)}")
        tests = entry["tests"]
        if not isinstance(tests, list) or not tests or not all(
                isinstance(test, str) and test.startswith("tests/") for test in tests):
            raise MutantListError(f"{path.name}: {entry['name']}: tests must be a non-empty list "
                                  f"of test ids under tests/")
        mutant = Mutant(**{**entry, "tests": tuple(tests)})
        if mutant.search == mutant.replace:
            raise MutantListError(f"{path.name}: {mutant.name}: replace equals search")
        target = root / mutant.file
        if not target.is_file():
            raise MutantListError(f"{path.name}: {mutant.name}: no file {mutant.file}")
        mutant.mutate(target.read_text())
        for test in tests:
            test_file = root / test.split("::")[0]
            if not test_file.is_file():
                raise MutantListError(f"{path.name}: {mutant.name}: no test file {test_file}")
        mutants.append(mutant)
    names = [mutant.name for mutant in mutants]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise MutantListError(f"{path.name}: duplicated names: {', '.join(duplicated)}")
    return mutants


def markdown_table(mutants: list[Mutant]) -> str:
    """Return the list as a markdown table: name, file and the claim each mutant breaks."""
    # A bar inside a cell would end the cell: markdown reads an escaped one as text.
    claims = [mutant.breaks.replace("|", "\\|") for mutant in mutants]
    rows = [f"| `{mutant.name}` | `{mutant.file}` | {claim} |"
            for mutant, claim in zip(mutants, claims)]
    return "\n".join(["| mutant | planted in | the claim it breaks |", "|---|---|---|", *rows])


def with_table(document: str, table: str) -> str:
    """Return ``document`` with ``table`` in place of the text between the two markers.

    Raises
    ------
    MutantListError
        When ``document`` lacks the markers, holds either twice, or has them out of order.
    """
    begin, end = document.find(TABLE_BEGIN), document.find(TABLE_END)
    if (document.count(TABLE_BEGIN), document.count(TABLE_END)) != (1, 1) or end < begin:
        raise MutantListError(f"{TABLE_DOC.relative_to(ROOT)}: expected the marker "
                              f"{TABLE_BEGIN!r} once, then {TABLE_END!r} once")
    return f"{document[:begin + len(TABLE_BEGIN)]}\n{table}\n{document[end:]}"


def working_tree_files(root: Path) -> list[str]:
    """Return the tracked and the untracked-but-not-ignored files of ``root``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root, check=True, capture_output=True, text=True).stdout
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def make_copy(root: Path, destination: Path, rev: str | None = None) -> Path:
    """Copy the tree to ``destination``; return the folder to put on PYTHONPATH.

    ``rev`` (a git revision) copies that commit instead of the working tree.
    """
    if rev is None:
        for name in working_tree_files(root):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target)
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=root, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    shim = destination / ".mutation-path" / "stepvit"
    shim.mkdir(parents=True)
    # stepvit.model, stepvit.rtl, ... are the copy's top-level folders, as pyproject maps them.
    (shim / "__init__.py").write_text(f"__path__ = [{str(destination)!r}]\n")
    return shim.parent


def run_tests(copy: Path, python_path: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """Run ``tests`` in ``copy`` with the copy's package first; return (exit code, tail)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(python_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "-m", "", "--no-header", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S} s"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def verdict_of(returncode: int) -> str:
    """Name a pytest exit code: 1 (tests failed) kills, 0 survives, the rest is an error."""
    return {1: "killed", 0: "survived"}.get(returncode, "error")


def check_mutant(mutant: Mutant, root: Path, rev: str | None = None) -> tuple[str, float, str]:
    """Plant ``mutant`` in a fresh copy, run its tests; return (verdict, seconds, detail)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        copy = Path(folder)
        python_path = make_copy(root, copy, rev)
        target = copy / mutant.file
        target.write_text(mutant.mutate(target.read_text()))
        returncode, detail = run_tests(copy, python_path, mutant.tests)
    return verdict_of(returncode), time.monotonic() - start, detail


def check_baseline(mutants: list[Mutant], root: Path,
                   rev: str | None = None) -> tuple[int, str]:
    """Run every named test on an unmutated copy: a kill means nothing if they fail anyway."""
    tests = tuple(dict.fromkeys(test for mutant in mutants for test in mutant.tests))
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as folder:
        copy = Path(folder)
        return run_tests(copy, make_copy(root, copy, rev), tests)


def main(argv: list[str] | None = None) -> int:
    """Run the list; print one line per mutant and a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)),
                        help="mutants checked at once (default: the number of CPUs)")
    parser.add_argument("--list", action="store_true", help="print the list and exit")
    parser.add_argument("--markdown", action="store_true",
                        help="print the list as a markdown table and exit")
    parser.add_argument("--table", action="store_true",
                        help="write the whole list's table into docs/testing.md and exit")
    parser.add_argument("--rev", default=None,
                        help="check this git revision (e.g. HEAD) instead of the working tree")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the named tests on the unmutated tree first")
    args = parser.parse_args(argv)
    try:
        mutants = load_mutants()
    except MutantListError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.table:
        try:
            document = with_table(TABLE_DOC.read_text(), markdown_table(mutants))
        except (OSError, MutantListError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        TABLE_DOC.write_text(document)
        print(f"{TABLE_DOC.relative_to(ROOT)}: the table of {len(mutants)} mutants written")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {mutant.name for mutant in mutants})
        if unknown:
            print(f"error: no mutant named {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [mutant for mutant in mutants if mutant.name in args.only]
    if args.markdown:
        print(markdown_table(mutants))
        return 0
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:40s} {mutant.file:28s} {mutant.breaks}")
        return 0
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    if not args.no_baseline:
        print("baseline: the named tests on the unmutated tree ...", flush=True)
        returncode, detail = check_baseline(mutants, ROOT, args.rev)
        if returncode != 0:
            print(f"error: the named tests fail without any mutant ({detail})", file=sys.stderr)
            return 1
        print(f"baseline: {detail}", flush=True)
    results: dict[str, tuple[str, float, str]] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(check_mutant, mutant, ROOT, args.rev): mutant
                   for mutant in mutants}
        for number, future in enumerate(futures, start=1):
            mutant = futures[future]
            results[mutant.name] = future.result()
            verdict, seconds, detail = results[mutant.name]
            print(f"[{number}/{len(mutants)}] {mutant.name}: {verdict} in {seconds:.0f} s "
                  f"({detail})", flush=True)
    print(f"\n{'mutant':40s} {'file':28s} {'verdict':9s} {'s':>5s}")
    for mutant in mutants:
        verdict, seconds, _ = results[mutant.name]
        print(f"{mutant.name:40s} {mutant.file:28s} {verdict:9s} {seconds:5.0f}")
    killed = sum(verdict == "killed" for verdict, _, _ in results.values())
    print(f"\n{killed} of {len(mutants)} mutants killed")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
