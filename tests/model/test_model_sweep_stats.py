import math

import pytest

from stepvit.model.sweep_stats import (
    format_summary,
    matched_fixed_t,
    paired_comparisons,
    spread,
    student_t_975,
    summarize_arms,
)


def row(arm, seed, accuracy, steps, work, kind=None, t_max=4):
    kind = kind or ("fixed" if arm.startswith("fixed") else "learned")
    return {"arm": arm, "kind": kind, "seed": seed, "t_max": t_max,
            "integer_accuracy": accuracy, "float_accuracy": accuracy, "agreement": 1.0,
            "avg_timesteps": steps, "ac_ops": work}


def test_spread_is_the_sample_mean_and_standard_deviation():
    assert spread([1.0, 2.0, 3.0, 4.0]) == {"mean": 2.5, "std": math.sqrt(5 / 3), "n": 4}
    assert spread([0.5]) == {"mean": 0.5, "std": None, "n": 1}


def test_student_quantiles_match_the_table():
    # two-sided 95 %: 12.706 (1 degree), 2.776 (4), 1.960 in the limit
    assert student_t_975(1) == pytest.approx(12.706, abs=1e-3)
    assert student_t_975(4) == pytest.approx(2.776, abs=1e-3)
    assert student_t_975(10_000) == pytest.approx(1.960, abs=1e-3)


def test_the_matched_fixed_arm_does_at_least_the_learned_steps():
    assert matched_fixed_t(1.83, [2, 3]) == 2
    assert matched_fixed_t(2.0, [2, 3]) == 2
    assert matched_fixed_t(2.01, [2, 3]) == 3
    assert matched_fixed_t(3.5, [2, 3]) == 3
    assert matched_fixed_t(2.0, []) is None


def test_paired_differences_pair_by_seed_and_give_a_t_interval():
    rows = [row("learned-t2", seed, acc, 1.9, 100.0) for seed, acc in
            ((0, 0.97), (1, 0.98), (2, 0.96), (3, 0.99))]
    # the fixed arm misses seed 3 and has seeds in another order: pairs follow the seed
    rows += [row("fixed-T2", seed, acc, 2.0, 150.0, t_max=2) for seed, acc in
             ((2, 0.95), (0, 0.95), (1, 0.97))]
    rows += [row("fixed-T3", seed, acc, 3.0, 200.0, t_max=3) for seed, acc in
             ((0, 0.99), (1, 0.995), (2, 0.985))]
    pairs = {pair["fixed"]: pair for pair in paired_comparisons(rows)}
    two = pairs["fixed-T2"]
    assert two["seeds"] == [0, 1, 2] and two["matched"] and not pairs["fixed-T3"]["matched"]
    assert two["accuracy_differences"] == pytest.approx([0.02, 0.01, 0.01])
    mean, std = 0.04 / 3, math.sqrt(((0.02 - 0.04 / 3) ** 2 + 2 * (0.01 - 0.04 / 3) ** 2) / 2)
    half = student_t_975(2) * std / math.sqrt(3)
    assert two["mean_accuracy_difference"] == pytest.approx(mean)
    assert two["interval_95"] == pytest.approx([mean - half, mean + half])
    assert two["mean_ac_ops_difference"] == -50.0
    # the interval [-0.0010, 0.0277] holds 0: no winner; T3 wins each seed by 1.5-2.5
    # points, the interval [-0.0324, -0.0076] excludes 0
    assert two["winner"] == "neither"
    assert pairs["fixed-T3"]["interval_95"] == pytest.approx([-0.03242, -0.00758], abs=1e-5)
    assert pairs["fixed-T3"]["winner"] == "fixed"


def test_one_seed_gives_no_interval_and_no_winner():
    pairs = paired_comparisons([row("learned-p0.1", 0, 0.9, 1.5, 10.0),
                                row("fixed-T2", 0, 0.5, 2.0, 20.0, t_max=2)])
    assert pairs[0]["interval_95"] is None and pairs[0]["winner"] == "neither"


def test_summaries_and_their_table():
    rows = [row("learned-t2", 0, 0.96, 2.0, 90.0), row("learned-t2", 1, 0.98, 1.5, 110.0),
            row("fixed-T2", 0, 0.97, 2.0, 150.0, t_max=2)]
    summaries = summarize_arms(rows)
    assert [summary["arm"] for summary in summaries] == ["learned-t2", "fixed-T2"]
    assert summaries[0]["seeds"] == [0, 1]
    assert summaries[0]["integer_accuracy"]["mean"] == pytest.approx(0.97)
    assert summaries[0]["ac_ops"]["std"] == pytest.approx(math.sqrt(200.0))
    table = format_summary(summaries, paired_comparisons(rows))
    assert "97.00 ± 1.41" in table and "fixed-T2 *" in table
