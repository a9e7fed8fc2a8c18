"""The command-line grammar every ``stepvit`` command shares: budgets, folders, progress.

One definition of each option (its spelling, its hidden old spellings, its default and its
help) and one check of the paths a user gives, so that every command reads them alike and
refuses a bad one in one line (a :class:`StepvitError`). argparse and the standard library
only: ``rtl`` and a board's Python import it too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from stepvit.model.export.budgets import BUDGET_GRAMMAR, DEFAULT_BUDGETS
from stepvit.model.export.errors import StepvitError

#: The help of ``--budget``, the same on every command that takes budgets.
BUDGET_HELP = (f"time-step budgets: {BUDGET_GRAMMAR} (default: {DEFAULT_BUDGETS}, every "
               f"budget 1..t_max; budget t_max is the trained mask)")


def add_budget_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--budget`` (alias ``--budgets``), read later by ``parse_budgets``."""
    parser.add_argument("--budget", "--budgets", dest="budget", default=None, metavar="B",
                        help=BUDGET_HELP)


def add_build_argument(parser: argparse.ArgumentParser, help_text: str, *,
                       required: bool = False, old_spellings: Sequence[str] = ()) -> None:
    """Add ``--build DIR``, the build folder, with ``old_spellings`` as hidden aliases."""
    target: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup = parser
    if required and old_spellings:
        # argparse would ask for --build when an old spelling is given: one of them is required
        target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--build", type=Path, default=None, metavar="DIR",
                        required=required and not old_spellings, help=help_text)
    for spelling in old_spellings:
        target.add_argument(spelling, dest="build", type=Path, default=None,
                            help=argparse.SUPPRESS)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-progress``."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar or progress lines (off a terminal, a bar "
                             "writes one line every half minute)")


def image_count(text: str) -> int | None:
    """Return ``--images`` as a count, or ``None`` for ``all`` (the whole test split)."""
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None


def input_folder(path: str | Path, option: str) -> Path:
    """Return ``path`` if it is a folder; otherwise refuse it in one line."""
    path = Path(path)
    if not path.is_dir():
        reason = "is not a folder" if path.exists() else "does not exist"
        raise StepvitError(f"{option} {path}: {reason}")
    return path


def output_folder(path: str | Path, option: str) -> Path:
    """Create the folder ``path`` (and its parents) if needed; refuse one that cannot be written.

    Raises
    ------
    StepvitError
        If the folder cannot be created or written, naming ``option`` and the reason.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StepvitError(f"{option} {path}: cannot create the folder "
                           f"({error.strerror or error})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StepvitError(f"{option} {path}: the folder cannot be written")
    return path
