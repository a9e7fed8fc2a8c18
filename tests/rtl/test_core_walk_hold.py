"""The core's walk held on random cycles: the same results, later by exactly the cycles held.

An activation read from DDR (docs/ddr-dataflow.md) will hold the walk until its words have
arrived (``walk_hold``): the pipeline after the walk then sees cycles without an event
between two events. These runs hold it on a random share of the cycles and hold the core to
the golden model bit for bit, and to its own unheld run: ``cycles`` grows by ``walk_held``,
no more, no less. The exports are those whose pipeline hazards are closest: the KV pass's
adds a cycle apart in each KV memory (parallel heads), a stem's stream handed on, segmented
spike words.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_core_golden import TINY, mismatches
from test_core_parallel_heads import HEAD_DIM, SHAPE, export_with_fixed_spikes, random_images
from test_stem_engine import stem_export

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_sim import simulate_core

#: The share of the cycles the walk is held.
HOLD_RATE = 0.3


def held_against_unheld(export, images, masks, lanes, **options):
    """Run the images unheld and held; return both runs and the golden model's results."""
    golden = GoldenModel(export).run(images, masks=masks)
    core = StepvitCore(export, lanes=lanes, **options)
    plain = simulate_core(export, images, masks, lanes=lanes, core=core)
    held = simulate_core(export, images, masks, lanes=lanes, core=core,
                         hold_rate=HOLD_RATE, hold_seed=lanes)
    return plain, held, golden


def check(plain, held, golden) -> None:
    assert mismatches(held, golden) == []
    assert mismatches(plain, golden) == []
    for unheld, run in zip(plain, held):
        assert unheld.walk_held == 0 < run.walk_held
        assert run.cycles == unheld.cycles + run.walk_held


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("budget", [1, None])
def test_a_held_walk_gives_the_same_results_later_by_the_cycles_held(
        tmp_path, random_export, lanes, budget) -> None:
    export = load_export(random_export(tmp_path, seed=1, **TINY))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    check(*held_against_unheld(export, images, export.budget_mask(budget), lanes))


def test_kv_adds_a_cycle_apart_held_apart_still_add_up(tmp_path, random_export) -> None:
    """K fires one channel of two heads at every token: each walker adds to the row its
    add of the cycle before wrote (the add one stage ahead is forwarded); held, the two
    adds are cycles apart and the second reads the first's write from the memory."""
    export = export_with_fixed_spikes(random_export, tmp_path, 13, {
        "k": {2, HEAD_DIM + 1}, "q": set(range(SHAPE["dim"])),
        "v": set(range(2 * HEAD_DIM))}, attn_shift=2)
    check(*held_against_unheld(export, random_images(), export.budget_mask(None),
                               4 * HEAD_DIM))


def test_a_stem_designs_blocks_held_give_the_same_results(tmp_path) -> None:
    export, lanes = stem_export(tmp_path, 0)
    images = np.random.default_rng(4).integers(
        0, 256, size=(2, *export.arch["image_shape"]), dtype=np.uint8)
    check(*held_against_unheld(export, images, export.budget_mask(None), lanes))


def test_segmented_spike_words_held_give_the_same_results(tmp_path, random_export) -> None:
    """Two heads side by side in 8 lanes, two dim segments, passes split into tiles."""
    export = load_export(random_export(tmp_path, seed=3, image_shape=[1, 8, 8], patch=2,
                                       dim=32, heads=8, depth=1, mlp_dim=64, num_classes=3,
                                       t_max=2))
    images = np.random.default_rng(5).integers(0, 256, size=(1, 1, 8, 8), dtype=np.uint8)
    check(*held_against_unheld(export, images, export.budget_mask(None), 8,
                               spike_word_bits=16, tile_words=64))
