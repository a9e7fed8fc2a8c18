"""The statistics of a sweep over seeds: spreads per arm, paired learned-versus-fixed tests.

A sweep trains every arm at each seed, so a learned arm and a fixed arm of the same seed
share their initial weights' generator and the order of their batches: comparing them seed
by seed (a paired difference) removes the part of the spread that both arms share. The
interval is Student's t at 95 % over the per-seed differences; with one seed there is none.
"""

from __future__ import annotations

import math
from typing import Any

#: The quantities of a row summarized per arm (mean and sample standard deviation).
SUMMARIZED = ("integer_accuracy", "float_accuracy", "agreement", "avg_timesteps", "ac_ops")


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Return ``mean``, ``std`` (sample, ``ddof=1``; None below two values) and ``n``."""
    count = len(values)
    mean = sum(values) / count
    std = (math.sqrt(sum((value - mean) ** 2 for value in values) / (count - 1))
           if count > 1 else None)
    return {"mean": mean, "std": std, "n": count}


def student_t_975(degrees: int) -> float:
    """Return the 97.5 % quantile of Student's t with ``degrees`` degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn, the digits data set's package

    return float(t.ppf(0.975, degrees))


def summarize_arms(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one summary per arm (in the rows' order): the spread of each quantity."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    return [{"arm": arm, "kind": chosen[0]["kind"], "t_max": chosen[0]["t_max"],
             "seeds": [row["seed"] for row in chosen],
             **{key: spread([float(row[key]) for row in chosen]) for key in SUMMARIZED}}
            for arm, chosen in arms.items()]


def matched_fixed_t(mean_steps: float, fixed_ts: list[int]) -> int | None:
    """Return the fixed T that matches a learned arm's mean steps.

    That is the least T at or above them (the fixed arm does at least the learned arm's
    steps), else the largest T.
    """
    if not fixed_ts:
        return None
    above = [steps for steps in fixed_ts if steps >= mean_steps - 1e-9]
    return min(above) if above else max(fixed_ts)


def paired_comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return, for every learned arm and every fixed arm, the paired per-seed comparison.

    Each entry has the seeds both arms finished, the per-seed differences (learned minus
    fixed) of integer accuracy and of accumulates per image, their mean, the 95 % interval
    of the accuracy difference (None with fewer than two seeds), whether the fixed arm is
    the step-matched one (:func:`matched_fixed_t`) and which arm wins: ``"learned"`` or
    ``"fixed"`` when the interval excludes 0, else ``"neither"``.
    """
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], {})[row["seed"]] = row
    kinds = {row["arm"]: row["kind"] for row in rows}
    fixed_t = {arm: next(iter(seeds.values()))["t_max"] for arm, seeds in by_arm.items()
               if kinds[arm] == "fixed"}
    comparisons = []
    for learned, learned_rows in by_arm.items():
        if kinds[learned] != "learned":
            continue
        steps = spread([row["avg_timesteps"] for row in learned_rows.values()])["mean"]
        matched = matched_fixed_t(steps, sorted(fixed_t.values()))
        for fixed, fixed_rows in by_arm.items():
            if kinds[fixed] != "fixed":
                continue
            seeds = sorted(set(learned_rows) & set(fixed_rows))
            if seeds:
                comparisons.append(_paired(learned, fixed, seeds, learned_rows, fixed_rows,
                                           matched=fixed_t[fixed] == matched))
    return comparisons


def _paired(learned: str, fixed: str, seeds: list[int], learned_rows: dict[int, Any],
            fixed_rows: dict[int, Any], *, matched: bool) -> dict[str, Any]:
    accuracy = [learned_rows[seed]["integer_accuracy"] - fixed_rows[seed]["integer_accuracy"]
                for seed in seeds]
    work = [learned_rows[seed]["ac_ops"] - fixed_rows[seed]["ac_ops"] for seed in seeds]
    summary = spread(accuracy)
    interval = None
    if summary["std"] is not None:
        half = student_t_975(len(seeds) - 1) * summary["std"] / math.sqrt(len(seeds))
        interval = [summary["mean"] - half, summary["mean"] + half]
    winner = "neither"
    if interval is not None and interval[0] > 0:
        winner = "learned"
    elif interval is not None and interval[1] < 0:
        winner = "fixed"
    return {"learned": learned, "fixed": fixed, "matched": matched, "seeds": seeds,
            "accuracy_differences": accuracy, "mean_accuracy_difference": summary["mean"],
            "interval_95": interval, "ac_ops_differences": work,
            "mean_ac_ops_difference": sum(work) / len(work), "winner": winner}


def format_summary(summaries: list[dict[str, Any]],
                   comparisons: list[dict[str, Any]]) -> str:
    """Return the per-arm spreads and the paired comparisons as a text table."""
    def cell(value: dict[str, Any], scale: float, digits: int) -> str:
        std = "" if value["std"] is None else f" ± {scale * value['std']:.{digits}f}"
        return f"{scale * value['mean']:.{digits}f}{std}"

    lines = [f"{'arm':<16}{'seeds':>6}{'integer %':>17}{'float %':>17}{'steps':>14}"
             f"{'AC/img':>20}"]
    for summary in summaries:
        lines.append(f"{summary['arm']:<16}{summary['integer_accuracy']['n']:>6}"
                     f"{cell(summary['integer_accuracy'], 100, 2):>17}"
                     f"{cell(summary['float_accuracy'], 100, 2):>17}"
                     f"{cell(summary['avg_timesteps'], 1, 2):>14}"
                     f"{cell(summary['ac_ops'], 1, 0):>20}")
    if comparisons:
        lines.append("")
        lines.append(f"{'learned - fixed':<28}{'seeds':>6}{'mean pts':>10}{'95 % interval':>20}"
                     f"{'AC/img':>11}  winner")
        for pair in comparisons:
            interval = ("" if pair["interval_95"] is None else
                        f"[{100 * pair['interval_95'][0]:+.2f}, "
                        f"{100 * pair['interval_95'][1]:+.2f}]")
            name = f"{pair['learned']} - {pair['fixed']}{' *' if pair['matched'] else ''}"
            lines.append(f"{name:<28}{len(pair['seeds']):>6}"
                         f"{100 * pair['mean_accuracy_difference']:>+10.2f}{interval:>20}"
                         f"{pair['mean_ac_ops_difference']:>+11,.0f}  {pair['winner']}")
        lines.append("(* the step-matched fixed arm: the least T at or above the learned "
                     "arm's mean steps)")
    return "\n".join(lines)
