"""Weight passes split into tiles (``tile_words``): the plan's slices and the core, bit for bit.

A design that streams its weights holds one pass's weight words on chip at a time, so
``CorePlan(..., tile_words=N)`` splits every weight pass into slices of its chunks of at most
``N`` words. The slices must cover each layer's words once, in order; the core running them
must still be the golden model's, with the stream, the embedding's current and biases, the
thresholds, the ragged lanes and the logits of each slice at its true chunk.
"""

import numpy as np
import pytest
from test_core_golden import mismatches
from test_stem_engine import stem_export

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CorePlan, WeightSource
from stepvit.rtl.core_sim import simulate_core

#: Input widths of every weight layer alike (patch 2 x 2 x 2 = dim = 8, mlp_dim 12), so one
#: tile size makes every weight pass one-chunk slices; 3 lanes leave ragged chunks of dim,
#: and 5 classes two chunks of logits.
SHAPE = dict(image_shape=[2, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=12,
             num_classes=5, t_max=3)
LANES = 3
#: Tile sizes of the core runs: one-chunk slices of every weight pass (12: fc2's 12-word
#: chunk, one 8-word chunk of the others), and a middle size (two 8-word chunks a slice).
ONE_CHUNK, MIDDLE = 12, 16


@pytest.fixture(scope="module")
def export(tmp_path_factory, random_export):
    return load_export(random_export(tmp_path_factory.mktemp("tiles"), seed=7, **SHAPE))


def images_of(export, seed, count=2):
    """Return ``count`` random images of the export's shape, a third of their pixels zero."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *export.arch["image_shape"]), dtype=np.uint8)
    images[rng.random(images.shape) < 0.3] = 0
    return images


def run_both_budgets(export, lanes, tile_words, seed, **core_options):
    """Run two images at budget 1 and two at the trained mask.

    Returns the mismatches with the golden model, the cycles of each image and the core.
    """
    core = StepvitCore(export, lanes=lanes, tile_words=tile_words, **core_options)
    lines, cycles = [], []
    for budget in (1, None):
        images = images_of(export, seed + (budget or 0))
        masks = export.budget_mask(budget)
        golden = GoldenModel(export).run(images, masks=masks)
        runs = simulate_core(export, images, masks, lanes=lanes, core=core)
        lines += [f"budget {budget}: {line}" for line in mismatches(runs, golden)]
        cycles += [run.cycles for run in runs]
    return lines, cycles, core


# --- the plan --------------------------------------------------------------------------

def test_without_tiles_every_pass_is_one_tile(export):
    plan = CorePlan(export, lanes=LANES)
    assert not plan.split
    tiles = [tile for tile in plan.tiles if tile is not None]
    assert sum(p.get("weights") == WeightSource.ROM for p in plan.passes) == len(tiles)
    # embedding, q, k, v, proj, fc1 in two slices (of dim_chunks = 3 chunks, then 1), fc2, head
    assert [words for _, words in tiles] == [3 * 8, 3 * 8, 3 * 8, 3 * 8, 3 * 8, 3 * 8, 1 * 8,
                                             3 * 12, 2 * 8]
    assert plan.tile_depth == 36
    assert sum(words for _, words in tiles) == len(plan.weight_words)


@pytest.mark.parametrize("tile_words", [12, 16, 20, 24, 36, 1000])
def test_tiles_cover_the_weights_once_in_order(export, tile_words):
    whole, plan = CorePlan(export, lanes=LANES), CorePlan(export, lanes=LANES,
                                                          tile_words=tile_words)
    tiles = [tile for tile in plan.tiles if tile is not None]
    # consecutive, from word 0 to the last: every word read by exactly one pass
    assert tiles[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(tiles, tiles[1:]))
    assert tiles[-1][0] + tiles[-1][1] == len(plan.weight_words) == len(whole.weight_words)
    assert all(words <= tile_words for _, words in tiles)
    assert plan.tile_depth == max(words for _, words in tiles) <= tile_words
    assert plan.split == (tile_words < 36)
    # the memories are the same; only the passes are cut
    assert (plan.weight_words, plan.bias_words, plan.theta_words) == \
        (whole.weight_words, whole.bias_words, whole.theta_words)
    assert len(plan.tiles) == len(plan.passes)
    # as many chunks as fit (a layer's last slice may have fewer)
    for p in plan.passes:
        if p.get("weights") == WeightSource.ROM:
            fit = tile_words // p["input_len"]
            assert 1 <= p["chunks"] <= fit


def test_slices_offset_their_chunks_thresholds_and_biases(export):
    whole = CorePlan(export, lanes=LANES)
    plan = CorePlan(export, lanes=LANES, tile_words=ONE_CHUNK)
    q_whole = next(p for p in whole.passes if p.get("target") is not None
                   and p.get("weights") == WeightSource.ROM)
    slices = [p for p in plan.passes if p.get("layer") == q_whole["layer"]
              and p.get("weights") == WeightSource.ROM]
    assert [p["chunk_offset"] for p in slices] == [0, 1, 2]
    assert [p["chunks"] for p in slices] == [1, 1, 1]
    assert [p["theta_base"] for p in slices] == [q_whole["theta_base"] + c for c in range(3)]
    assert [p["bias_base"] for p in slices] == [q_whole["bias_base"] + c for c in range(3)]
    assert [p["weight_base"] for p in slices] == [q_whole["weight_base"] + 8 * c
                                                  for c in range(3)]
    # the embedding's biases are per token: addressed by the true index, not offset
    embed = [p for p in plan.passes if p.get("bias_per_token")]
    assert [p["bias_base"] for p in embed] == [0, 0, 0]
    assert [p["chunk_offset"] for p in embed] == [0, 1, 2]
    # fc1's slices of dim_chunks chunks are cut further: chunks 0, 1, 2, then 3
    fc1 = [p for p in plan.passes if p.get("target") is not None
           and p["target"].name == "HIDDEN"]
    assert [p["chunk_offset"] for p in fc1] == [0, 1, 2, 3]
    head = [p for p in plan.passes if p.get("count_planes")]
    assert [(p["chunk_offset"], p["chunks"]) for p in head] == [(0, 1), (1, 1)]


@pytest.mark.parametrize("tile_words", [0, -8, 8.0, True, "64"])
def test_tile_words_must_be_a_positive_integer(export, tile_words):
    with pytest.raises(ValueError, match="tile_words must be a positive integer"):
        CorePlan(export, lanes=LANES, tile_words=tile_words)


def test_a_chunk_larger_than_a_tile_is_refused(export):
    # the embedding's chunk (8 words) fits in 10, fc2's (12, mlp_dim) does not
    with pytest.raises(ValueError, match=r"one chunk of blocks\.0\.mlp\.fc2 needs 12 weight "
                                         r"words, more than tile_words \(10\)"):
        CorePlan(export, lanes=LANES, tile_words=10)
    with pytest.raises(ValueError, match=r"one chunk of embed needs 8 weight words"):
        CorePlan(export, lanes=LANES, tile_words=7)


def test_the_core_refuses_a_bad_tile_size(export):
    with pytest.raises(ValueError, match="tile_words"):
        StepvitCore(export, lanes=LANES, tile_words=0)


# --- the core ----------------------------------------------------------------------------

def test_one_chunk_slices_match_golden_and_cost_few_cycles(export):
    lines, cycles, core = run_both_budgets(export, LANES, ONE_CHUNK, seed=0)
    assert core.plan.tile_words == ONE_CHUNK and core.plan.split
    assert lines == []
    _, whole, _ = run_both_budgets(export, LANES, None, seed=0)
    # a slice costs its own prefetch, prime and drain, and walks its words again: more
    # cycles, never fewer, and at most a few times as many here
    assert all(w < c < 3 * w for w, c in zip(whole, cycles))


def test_middle_slices_match_golden(export):
    lines, _, _ = run_both_budgets(export, LANES, MIDDLE, seed=3)
    assert lines == []


def test_parallel_heads_with_slices_match_golden(tmp_path, random_export):
    # head_dim 2 and 4 lanes: the KV passes walk two heads side by side; every weight
    # layer reads 8 words a chunk, so 8 words a tile are one-chunk slices
    export = load_export(random_export(tmp_path, seed=4, image_shape=[2, 4, 4], patch=2,
                                       dim=8, heads=4, depth=1, mlp_dim=8, num_classes=3,
                                       t_max=2))
    lines, _, core = run_both_budgets(export, 4, 8, seed=5)
    assert core.plan.geometry.parallel_heads == 2 and core.plan.split
    assert lines == []


def test_a_stem_export_with_slices_matches_golden(tmp_path):
    # stem 0: dim 4 (two chunks of 3 lanes, the last ragged), mlp 4, 3 classes; no patch
    # embedding (the stem makes the stream); 4 words a tile are one-chunk slices
    export, _ = stem_export(tmp_path, 0)
    lines, _, core = run_both_budgets(export, 3, 4, seed=1, stem_lanes=2)
    assert core.plan.split
    assert lines == []
