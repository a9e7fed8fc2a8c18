"""Time-step budgets: the one grammar of ``--budget`` and the mask a budget leaves.

A budget ``B`` caps every module at its first ``B`` trained steps (SPEC.md section 3);
budget ``t_max`` is the trained mask itself. Every command that takes budgets (``eval``,
``sim``, ``bench``, ``run``) reads them with :func:`parse_budgets`, so the grammar, the
default and the messages are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stepvit.model.export.errors import StepvitError

#: What ``--budget`` accepts, for help texts and messages.
BUDGET_GRAMMAR = "a budget B, a list B1,B2, a range A-B, or all"
#: The budgets a command runs when ``--budget`` is not given: every one, 1..t_max.
DEFAULT_BUDGETS = "all"


def check_budget(budget: int, t_max: int, *, option: str = "budget") -> int:
    """Return ``budget`` if it lies in ``1..t_max``; the one message for one that does not."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) \
            or not 1 <= budget <= t_max:
        raise StepvitError(f"{option} {budget!r} is outside 1..{t_max} "
                           f"(this export has t_max = {t_max})")
    return int(budget)


def parse_budgets(text: str | None, t_max: int, *, option: str = "--budget") -> list[int]:
    """Return the budgets named by ``text``, in the order given, without repeats.

    Parameters
    ----------
    text : str or None
        ``"2"``, ``"1,3"``, ``"1-4"``, ``"all"`` (or a mix: ``"1,3-4"``); ``None`` means
        :data:`DEFAULT_BUDGETS`.
    t_max : int
        The export's time steps: budgets lie in ``1..t_max``.
    option : str
        The option's name, for messages.

    Raises
    ------
    StepvitError
        For anything else, or a budget outside ``1..t_max``, in one line.
    """
    text = DEFAULT_BUDGETS if text is None else str(text).strip()
    if text == "all":
        return list(range(1, t_max + 1))
    return parse_ranges(text, option=option, grammar=BUDGET_GRAMMAR,
                        check=lambda budget: check_budget(budget, t_max, option=option))


def parse_ranges(text: str, *, option: str, grammar: str,
                 check: Callable[[int], int]) -> list[int]:
    """Return the integers named by ``text`` (``"2"``, ``"1,3"``, ``"0-4"``, ``"1,3-4"``).

    The order is the one given, without repeats; ``check`` sees each number and raises
    for one out of range. Budgets and sweep seeds share this grammar.

    Raises
    ------
    StepvitError
        For anything but numbers, lists and ranges (the message quotes ``grammar``), or an
        empty range.
    """
    numbers: list[int] = []
    for item in text.split(","):
        bounds = item.strip().split("-")
        if len(bounds) > 2 or not all(bound.strip().isdigit() for bound in bounds):
            raise StepvitError(f"{option}: expected {grammar}, got {text!r}")
        first, last = int(bounds[0]), int(bounds[-1])
        if first > last:
            raise StepvitError(f"{option}: the range {item.strip()!r} is empty")
        for number in range(first, last + 1):
            check(number)
            if number not in numbers:
                numbers.append(number)
    return numbers


def budget_mask_of(timestep_mask: np.ndarray, budget: int | None,
                   stem_modules: int = 0) -> np.ndarray:
    """Return ``timestep_mask`` with each row keeping only its first ``budget`` set bits.

    With a convolutional stem, a cap that drops steps leaves each stem module only the steps
    the module before it kept, and the modules after the stem only the steps where it still
    hands on tokens (SPEC.md section 5): the stem is a chain within a step, and the stream
    is rebuilt from its tokens at every step.

    Parameters
    ----------
    timestep_mask : numpy.ndarray
        0/1 array ``[modules, T]``.
    budget : int or None
        Active steps each module may keep (SPEC.md section 3); ``None`` keeps the mask.
    stem_modules : int
        The stem's modules (its first rows), 0 without a stem.

    Raises
    ------
    StepvitError
        If ``budget`` is not an integer in ``1..T`` (:func:`check_budget`).
    """
    mask = np.asarray(timestep_mask, dtype=np.uint8)
    if budget is None:
        return mask.copy()
    budget = check_budget(budget, mask.shape[1])
    kept = np.cumsum(mask, axis=1) <= int(budget)
    capped = (mask * kept).astype(np.uint8)
    if budget < mask.shape[1] and stem_modules:
        for row in range(1, stem_modules):
            capped[row] &= capped[row - 1]
        capped[stem_modules:] &= capped[stem_modules - 1]
    return capped
